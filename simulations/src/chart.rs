//! Line charts as standalone SVG, written by hand: a title, an x axis, one
//! or two y axes (dollars), grid lines, optional vertical markers and a
//! legend. Each series has its own colour and dash pattern, so the chart
//! also reads in grey.

use std::fmt::Write;

/// Which y axis a series is drawn against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Axis {
    Left,
    Right,
}

/// One line: `(x, y)` points in order of x.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    /// Any SVG colour, e.g. `#1f77b4`.
    pub color: &'static str,
    pub axis: Axis,
    /// An SVG `stroke-dasharray` such as `"7,4"`, or `None` for a solid line.
    pub dash: Option<&'static str>,
    /// Line width in pixels. Drawing earlier series wider keeps lines that
    /// coincide visible as one line inside another.
    pub width: f64,
    pub points: Vec<(f64, f64)>,
}

/// A vertical dashed line at `x` with a short label, e.g. a shock month.
#[derive(Clone, Debug)]
pub struct Marker {
    pub x: f64,
    pub label: String,
}

/// A line chart; y values are dollars.
#[derive(Clone, Debug, Default)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub left_label: String,
    /// Set to draw a right axis for the series on [`Axis::Right`].
    pub right_label: Option<String>,
    pub series: Vec<Series>,
    pub markers: Vec<Marker>,
}

/// A palette that stays apart in colour-blind viewing (Okabe–Ito).
pub const COLORS: [&str; 6] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9",
];

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 500.0;
const TOP: f64 = 56.0;
const BOTTOM: f64 = 120.0;
const LEFT: f64 = 90.0;
/// Rough width of one character of the 12px sans-serif legend text.
const CHAR_WIDTH: f64 = 7.0;

/// Ticks of an axis from 0 (or the lowest value if negative) to above the
/// highest value, at a step of 1, 2 or 5 times a power of ten.
#[derive(Clone, Debug, PartialEq)]
pub struct Ticks {
    pub lo: f64,
    pub hi: f64,
    pub step: f64,
}

impl Ticks {
    pub fn for_range(min: f64, max: f64) -> Ticks {
        let min = if min.is_finite() { min.min(0.0) } else { 0.0 };
        let mut max = if max.is_finite() { max } else { 1.0 };
        if max <= min {
            max = min + 1.0;
        }
        let raw = (max - min) / 5.0;
        let mag = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0]
            .into_iter()
            .map(|m| m * mag)
            .find(|s| *s >= raw)
            .unwrap_or(10.0 * mag);
        Ticks {
            lo: (min / step).floor() * step,
            hi: (max / step).ceil() * step,
            step,
        }
    }

    pub fn values(&self) -> Vec<f64> {
        let n = ((self.hi - self.lo) / self.step).round() as usize;
        (0..=n).map(|i| self.lo + i as f64 * self.step).collect()
    }

    /// Decimals that tell the ticks apart, at least two (cents).
    fn decimals(&self) -> usize {
        let d = (-self.step.log10()).ceil();
        if d.is_finite() && d > 2.0 {
            d as usize
        } else {
            2
        }
    }
}

/// A month step that gives at most a dozen x ticks.
fn x_step(span: f64) -> f64 {
    [1.0, 2.0, 3.0, 6.0, 12.0, 24.0, 60.0, 120.0]
        .into_iter()
        .find(|s| span / s <= 12.0)
        .unwrap_or(240.0)
}

/// `&`, `<`, `>`, `"` and `'` as XML entities.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

impl LineChart {
    fn range(&self, axis: Axis) -> Option<(f64, f64)> {
        let ys = self
            .series
            .iter()
            .filter(|s| s.axis == axis)
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .filter(|y| y.is_finite());
        ys.fold(None, |acc, y| match acc {
            None => Some((y, y)),
            Some((lo, hi)) => Some((f64::min(lo, y), f64::max(hi, y))),
        })
    }

    pub fn to_svg(&self) -> String {
        let right_margin = if self.right_label.is_some() {
            90.0
        } else {
            40.0
        };
        let (x0, x1) = (LEFT, WIDTH - right_margin);
        let (y0, y1) = (HEIGHT - BOTTOM, TOP);
        let xs = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0));
        let (xmin, xmax) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(x), hi.max(x))
        });
        let (xmin, xmax) = if xmin.is_finite() && xmax > xmin {
            (xmin, xmax)
        } else if xmin.is_finite() {
            (xmin, xmin + 1.0)
        } else {
            (0.0, 1.0)
        };
        let sx = |x: f64| x0 + (x - xmin) / (xmax - xmin) * (x1 - x0);
        let left = self
            .range(Axis::Left)
            .map_or(Ticks::for_range(0.0, 1.0), |(lo, hi)| {
                Ticks::for_range(lo, hi)
            });
        let right = self
            .range(Axis::Right)
            .map_or(Ticks::for_range(0.0, 1.0), |(lo, hi)| {
                Ticks::for_range(lo, hi)
            });
        let sy = |t: &Ticks, y: f64| y0 - (y - t.lo) / (t.hi - t.lo) * (y0 - y1);

        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="Helvetica, Arial, sans-serif" font-size="12">
<title>{}</title>
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="28" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"#,
            escape(&self.title),
            WIDTH / 2.0,
            escape(&self.title)
        );

        // Grid and left axis ticks.
        let ld = left.decimals();
        for v in left.values() {
            let y = sy(&left, v);
            let _ = writeln!(
                svg,
                r##"<line x1="{x0:.1}" y1="{y:.1}" x2="{x1:.1}" y2="{y:.1}" stroke="#e0e0e0"/>
<text x="{:.1}" y="{:.1}" text-anchor="end">${v:.ld$}</text>"##,
                x0 - 6.0,
                y + 4.0
            );
        }
        // X ticks.
        let step = x_step(xmax - xmin);
        let mut x = (xmin / step).ceil() * step;
        let x_tick = |svg: &mut String, at: f64| {
            let px = sx(at);
            let _ = writeln!(
                svg,
                r#"<line x1="{px:.1}" y1="{y0:.1}" x2="{px:.1}" y2="{:.1}" stroke="black"/>
<text x="{px:.1}" y="{:.1}" text-anchor="middle">{at}</text>"#,
                y0 + 5.0,
                y0 + 18.0
            );
        };
        if x > xmin && xmin >= 1.0 && step > 1.0 {
            // Always label the first month too.
            x_tick(&mut svg, xmin);
        }
        while x <= xmax + 1e-9 {
            x_tick(&mut svg, x);
            x += step;
        }
        // Markers.
        for m in &self.markers {
            if m.x < xmin || m.x > xmax {
                continue;
            }
            let px = sx(m.x);
            let _ = writeln!(
                svg,
                r##"<line x1="{px:.1}" y1="{y0:.1}" x2="{px:.1}" y2="{y1:.1}" stroke="#888888" stroke-dasharray="3,3"/>
<text x="{:.1}" y="{:.1}" fill="#555555">{}</text>"##,
                px + 4.0,
                y1 + 12.0,
                escape(&m.label)
            );
        }
        // Axes.
        let _ = writeln!(
            svg,
            r#"<line x1="{x0:.1}" y1="{y0:.1}" x2="{x1:.1}" y2="{y0:.1}" stroke="black"/>
<line x1="{x0:.1}" y1="{y0:.1}" x2="{x0:.1}" y2="{y1:.1}" stroke="black"/>
<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>
<text transform="translate(22,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            (x0 + x1) / 2.0,
            y0 + 40.0,
            escape(&self.x_label),
            (y0 + y1) / 2.0,
            escape(&self.left_label)
        );
        if let Some(label) = &self.right_label {
            let rd = right.decimals();
            let _ = writeln!(
                svg,
                r#"<line x1="{x1:.1}" y1="{y0:.1}" x2="{x1:.1}" y2="{y1:.1}" stroke="black"/>
<text transform="translate({:.1},{:.1}) rotate(90)" text-anchor="middle">{}</text>"#,
                WIDTH - 22.0,
                (y0 + y1) / 2.0,
                escape(label)
            );
            for v in right.values() {
                let _ = writeln!(
                    svg,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="start">${v:.rd$}</text>"#,
                    x1 + 6.0,
                    sy(&right, v) + 4.0
                );
            }
        }
        // Lines.
        for s in &self.series {
            let ticks = match s.axis {
                Axis::Left => &left,
                Axis::Right => &right,
            };
            let points: Vec<String> = s
                .points
                .iter()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(ticks, y)))
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{}" stroke-width="{}"{} stroke-linejoin="round" points="{}"/>"#,
                s.color,
                s.width,
                dash(s.dash),
                points.join(" ")
            );
        }
        // Legend, below the x label, wrapping to new rows.
        let (mut lx, mut ly) = (x0, y0 + 66.0);
        for s in &self.series {
            let text = match (s.axis, self.right_label.is_some()) {
                (Axis::Right, true) => format!("{} (right axis)", s.name),
                (Axis::Left, true) => format!("{} (left axis)", s.name),
                _ => s.name.clone(),
            };
            let w = 34.0 + text.chars().count() as f64 * CHAR_WIDTH + 24.0;
            if lx + w > x1 && lx > x0 {
                lx = x0;
                ly += 20.0;
            }
            let _ = writeln!(
                svg,
                r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{}" stroke-width="{}"{}/>
<text x="{:.1}" y="{:.1}">{}</text>"#,
                lx + 26.0,
                s.color,
                s.width,
                dash(s.dash),
                lx + 34.0,
                ly + 4.0,
                escape(&text)
            );
            lx += w;
        }
        svg.push_str("</svg>\n");
        svg
    }
}

fn dash(pattern: Option<&'static str>) -> String {
    pattern.map_or(String::new(), |p| {
        format!(r#" stroke-dasharray="{}""#, escape(p))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_cover_the_range_in_round_steps() {
        let t = Ticks::for_range(0.0, 3.5);
        assert_eq!((t.lo, t.hi, t.step), (0.0, 4.0, 1.0));
        let t = Ticks::for_range(0.02, 0.163);
        assert_eq!(t.lo, 0.0);
        assert!((t.step - 0.05).abs() < 1e-12);
        assert!(t.hi >= 0.163 && t.hi < 0.25);
        assert_eq!(Ticks::for_range(5.0, 5.0).lo, 0.0);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }

    #[test]
    fn an_svg_has_its_title_axes_and_legend() {
        let chart = LineChart {
            title: "T & U".into(),
            x_label: "month".into(),
            left_label: "dollars".into(),
            right_label: Some("price".into()),
            series: vec![
                Series {
                    name: "a".into(),
                    color: COLORS[0],
                    axis: Axis::Left,
                    dash: None,
                    width: 2.0,
                    points: vec![(1.0, 1.0), (2.0, 3.0)],
                },
                Series {
                    name: "b".into(),
                    color: COLORS[1],
                    axis: Axis::Right,
                    dash: Some("7,4"),
                    width: 2.0,
                    points: vec![(1.0, 0.1), (2.0, 0.2)],
                },
            ],
            markers: vec![],
        };
        let svg = chart.to_svg();
        assert!(svg.starts_with("<?xml"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("T &amp; U"));
        assert!(svg.contains("a (left axis)") && svg.contains("b (right axis)"));
        assert_eq!(svg.matches("<polyline").count(), 2);
    }
}

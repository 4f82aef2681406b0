//! Low-latency live: the parts a planner lists, put back into segments.
//!
//! With parts, the unit the swarm moves (and a planner lists, in sequence
//! order) is a part; players see segments, each its parts back to back.
//! [`group_parts`] rebuilds them from what is listed, with these rules:
//!
//! - A segment is **closed** once a part of a later segment is listed;
//!   the last segment listed is the **open** one (its parts so far).
//! - A segment is a **gap** when any of its parts is missing: a gap unit
//!   (given up, or passed over at its deadline) between two parts of it,
//!   before a later segment's first part (its tail), or a later segment
//!   listed from a part other than its first (that segment's head is
//!   missing too, and it is a gap as well). Which segment a gap unit
//!   belonged to is not always known, so every segment it may have
//!   belonged to is a gap; segments skipped whole are gaps too.
//! - The playlist starts at the first segment whose first part is listed:
//!   a viewer that joined mid-segment does not list the half it has.
//! - A part listed out of order (its segment before the one under way,
//!   or its place not after the last one's) is left out; only a
//!   misbehaving broadcaster signs such parts. Every segment has a part,
//!   so no more segments can be skipped whole than units are missing: a
//!   jump in segment numbers further than that (signed by a misbehaving
//!   broadcaster, up to 2^64) starts the playlist again at the new
//!   segment rather than list the segments between. The work is linear
//!   in what is listed, whatever the numbers say.

use super::planner::Listed;

/// One part as a playlist lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListedPart {
    /// Its unit sequence (what the planner lists it by).
    pub sequence: u64,
    pub index: u32,
    pub duration_us: u64,
    pub independent: bool,
    pub published_ms: Option<u64>,
}

/// A segment rebuilt from its parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartSegment {
    /// Its media sequence number.
    pub segment: u64,
    /// Its parts listed, in order (none for a segment skipped whole).
    pub parts: Vec<ListedPart>,
    /// A part of it is missing: players skip it (`EXT-X-GAP`).
    pub gap: bool,
}

impl PartSegment {
    fn new(segment: u64) -> PartSegment {
        PartSegment {
            segment,
            parts: Vec::new(),
            gap: false,
        }
    }

    /// The sum of its parts' durations.
    pub fn duration_us(&self) -> u64 {
        self.parts.iter().map(|p| p.duration_us).sum()
    }
}

/// The segments a rendition's listed parts make.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartsView {
    /// Closed segments, oldest first.
    pub closed: Vec<PartSegment>,
    /// The segment under way.
    pub open: Option<PartSegment>,
}

/// Groups `listed` (a planner's playlist of parts) into segments. See
/// the module documentation.
pub fn group_parts(listed: &[Listed]) -> PartsView {
    let mut view = PartsView::default();
    let mut open: Option<PartSegment> = None;
    // Gap units since the last part held.
    let mut missing: u64 = 0;
    for l in listed {
        let Some(p) = l.part.filter(|_| !l.gap) else {
            if open.is_some() {
                missing += 1;
            }
            continue;
        };
        let part = ListedPart {
            sequence: l.sequence,
            index: p.index,
            duration_us: l.duration_us,
            independent: p.independent,
            published_ms: l.published_ms,
        };
        let Some(current) = &mut open else {
            // The playlist starts at a segment's first part.
            if p.index == 0 {
                let mut s = PartSegment::new(p.segment);
                s.parts.push(part);
                open = Some(s);
            }
            continue;
        };
        if p.segment == current.segment {
            let follows = current.parts.last().is_some_and(|q| p.index > q.index);
            if !follows {
                continue;
            }
            let next = current.parts.last().map_or(0, |q| q.index + 1);
            current.gap |= missing > 0 || p.index != next;
            current.parts.push(part);
            missing = 0;
            continue;
        }
        if p.segment < current.segment {
            continue;
        }
        // A later segment: the open one closes. What was missing since
        // its last part was its tail, the segments between, or the new
        // one's head.
        let head_missing = p.index != 0;
        let mut closed = open.take().unwrap_or_else(|| PartSegment::new(p.segment));
        let from = closed.segment.saturating_add(1);
        if p.segment.saturating_sub(from) > missing {
            // More segments skipped than units missing: numbers no honest
            // broadcaster signs. Start again here.
            view.closed.clear();
            if p.index == 0 {
                let mut s = PartSegment::new(p.segment);
                s.parts.push(part);
                open = Some(s);
            }
            missing = 0;
            continue;
        }
        closed.gap |= missing > 0;
        view.closed.push(closed);
        for skipped in from..p.segment {
            let mut s = PartSegment::new(skipped);
            s.gap = true;
            view.closed.push(s);
        }
        let mut s = PartSegment::new(p.segment);
        s.gap = head_missing;
        s.parts.push(part);
        open = Some(s);
        missing = 0;
    }
    // Gap units after the last part are the open segment's next parts or
    // the next segment's first; the next part listed will say which.
    view.open = open;
    view
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::PartOf;

    /// Unit `sequence`: part `index` of `segment`, or a gap (`None`).
    fn unit(sequence: u64, at: Option<(u64, u32)>) -> Listed {
        Listed {
            sequence,
            duration_us: 200_000,
            gap: at.is_none(),
            published_ms: at.map(|_| 1000 + sequence),
            part: at.map(|(segment, index)| PartOf {
                segment,
                index,
                independent: index == 0,
            }),
        }
    }

    fn shape(view: &PartsView) -> Vec<(u64, Vec<u32>, bool)> {
        view.closed
            .iter()
            .chain(&view.open)
            .map(|s| (s.segment, s.parts.iter().map(|p| p.index).collect(), s.gap))
            .collect()
    }

    #[test]
    fn parts_make_closed_segments_and_one_open_segment() {
        let listed = [
            unit(0, Some((4, 1))), // joined mid-segment: left out
            unit(1, Some((5, 0))),
            unit(2, Some((5, 1))),
            unit(3, Some((5, 2))),
            unit(4, Some((6, 0))),
            unit(5, Some((6, 1))),
        ];
        let view = group_parts(&listed);
        assert_eq!(
            shape(&view),
            vec![(5, vec![0, 1, 2], false), (6, vec![0, 1], false)]
        );
        assert_eq!(view.closed.len(), 1);
        assert_eq!(view.closed[0].duration_us(), 600_000);
        assert_eq!(view.open.as_ref().map(|s| s.segment), Some(6));
    }

    #[test]
    fn a_missing_part_makes_every_segment_it_may_belong_to_a_gap() {
        // Inside a segment.
        let view = group_parts(&[
            unit(0, Some((1, 0))),
            unit(1, None),
            unit(2, Some((1, 2))),
            unit(3, Some((2, 0))),
        ]);
        assert_eq!(
            shape(&view),
            vec![(1, vec![0, 2], true), (2, vec![0], false)]
        );
        // Before a later segment's first part: the tail of the one before.
        let view = group_parts(&[unit(0, Some((1, 0))), unit(1, None), unit(2, Some((2, 0)))]);
        assert_eq!(shape(&view), vec![(1, vec![0], true), (2, vec![0], false)]);
        // Before a later segment's second part: either, and a segment
        // skipped whole between them.
        let view = group_parts(&[
            unit(0, Some((1, 0))),
            unit(1, None),
            unit(2, None),
            unit(3, Some((3, 1))),
        ]);
        assert_eq!(
            shape(&view),
            vec![(1, vec![0], true), (2, vec![], true), (3, vec![1], true)]
        );
    }

    #[test]
    fn parts_out_of_order_are_left_out() {
        let view = group_parts(&[
            unit(0, Some((3, 0))),
            unit(1, Some((3, 1))),
            unit(2, Some((3, 1))),
            unit(3, Some((2, 5))),
            unit(4, Some((3, 2))),
        ]);
        assert_eq!(shape(&view), vec![(3, vec![0, 1, 2], false)]);
        // A segment number no gap explains starts the playlist again,
        // at once, however far it jumps.
        let view = group_parts(&[
            unit(0, Some((3, 0))),
            unit(1, None),
            unit(2, Some((u64::MAX, 0))),
            unit(3, Some((u64::MAX, 1))),
        ]);
        assert_eq!(shape(&view), vec![(u64::MAX, vec![0, 1], false)]);
        assert_eq!(group_parts(&[]), PartsView::default());
        assert_eq!(group_parts(&[unit(0, None)]), PartsView::default());
    }
}

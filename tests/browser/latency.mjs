// Glass-to-glass latency as viewers see it: opens shoal's player page
// for each URL (one tab each, in one headless Chromium), and once a tab
// plays, samples every 250 ms how far behind live its picture is
// (`window.shoal.behindMs`: Date.now() - hls.playingDate, the playlist's
// program date of the frame on screen), for the given seconds. Counts
// stalls (`waiting` after playback began). If a screenshot path is given,
// takes one picture of the first tab's video halfway through, with the
// wall clock (milliseconds of the UTC day) and behindMs at that moment,
// to check against the clock the encoder burned into the picture.
// Prints one JSON line.
//
//   node latency.mjs <seconds> <screenshot path or -> <page url>...
import { launch } from "./launch.mjs";

const [secondsText, shotPath, ...urls] = process.argv.slice(2);
const seconds = Number(secondsText);

const browser = await launch();
const state = () => ({
  playing: window.shoal ? window.shoal.playing : false,
  behindMs: window.shoal ? window.shoal.behindMs : null,
  stalls: window.shoal ? window.shoal.stalls : 0,
  partsLoaded: window.shoal ? window.shoal.partsLoaded : 0,
  fatal: window.shoal ? window.shoal.fatal : "page did not load",
});
const result = { pages: [], shot: null };
try {
  const pages = [];
  for (const url of urls) {
    const page = await browser.newPage({ viewport: { width: 960, height: 720 } });
    await page.goto(url);
    pages.push({ page, samples: [], startedAt: null, last: null });
  }
  // Until every tab plays (at most 60 s), then the measured span.
  const begun = Date.now();
  while (Date.now() - begun < 60000) {
    const all = await Promise.all(pages.map((p) => p.page.evaluate(state)));
    if (all.every((s) => s.playing && s.behindMs != null)) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  const start = Date.now();
  let shot = shotPath === "-";
  while (Date.now() - start < seconds * 1000) {
    for (const p of pages) {
      const s = await p.page.evaluate(state);
      p.last = s;
      if (s.playing && s.behindMs != null) p.samples.push(s.behindMs);
    }
    if (!shot && Date.now() - start > (seconds * 1000) / 2) {
      shot = true;
      const video = pages[0].page.locator("video");
      const before = Date.now();
      await video.screenshot({ path: shotPath });
      const after = Date.now();
      const s = await pages[0].page.evaluate(state);
      result.shot = {
        path: shotPath,
        // The screenshot was taken between these (ms of the UTC day).
        nowMsOfDay: [before % 86400000, after % 86400000],
        behindMs: s.behindMs,
      };
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  result.pages = pages.map((p) => ({
    samples: p.samples,
    stalls: p.last ? p.last.stalls : null,
    partsLoaded: p.last ? p.last.partsLoaded : null,
    fatal: p.last ? p.last.fatal : "never sampled",
  }));
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));

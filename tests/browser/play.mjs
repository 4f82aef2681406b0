// Opens shoal's player page in headless Chromium (Debian's, driven by
// playwright-core) and waits until the video's currentTime has passed a
// given time *and* it has played that long since it started (a live
// stream may start some seconds into its timeline), with no fatal hls.js
// error. Prints one JSON line with what happened and
// exits 0 on success, 1 otherwise.
//
//   node play.mjs <page url> <seconds to play> <timeout seconds>
import { launch } from "./launch.mjs";

const [url, wantText = "6", timeoutText = "60"] = process.argv.slice(2);
const want = Number(wantText);
const timeoutMs = Number(timeoutText) * 1000;

const browser = await launch();
let result = { ok: false };
try {
  const page = await browser.newPage();
  const consoleLines = [];
  page.on("console", (m) => consoleLines.push(m.text()));
  await page.goto(url);
  const started = Date.now();
  let firstTime = null;
  for (;;) {
    const state = await page.evaluate(() => ({
      currentTime: document.getElementById("video").currentTime,
      fatal: window.shoal ? window.shoal.fatal : "page did not load",
      errors: window.shoal ? window.shoal.errors : [],
      playing: window.shoal ? window.shoal.playing : false,
      behindMs: window.shoal ? window.shoal.behindMs : null,
      partsLoaded: window.shoal ? window.shoal.partsLoaded : 0,
      stalls: window.shoal ? window.shoal.stalls : 0,
    }));
    if (firstTime === null && state.playing) firstTime = state.currentTime;
    const played = firstTime === null ? 0 : state.currentTime - firstTime;
    result = { ...state, played, ok: false, elapsedMs: Date.now() - started };
    if (state.fatal) break;
    if (state.currentTime > want && played > want) {
      result.ok = true;
      break;
    }
    if (Date.now() - started > timeoutMs) {
      result.timeout = true;
      result.console = consoleLines.slice(-20);
      break;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);

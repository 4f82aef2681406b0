// Debian's headless Chromium, as every browser script here starts it
// (playwright-core; CHROMIUM names another binary), allowed to play
// video without a user's gesture.
import { chromium } from "playwright-core";

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--autoplay-policy=no-user-gesture-required",
    ],
  });
}

// shoal's player page: plays a live channel or an on-demand stream from
// this node's HLS gateway with hls.js, and charts where the bytes came
// from (peers or HTTP origins) and the peer count, from the gateway's
// read-only /live/<channel>/stats.json.
"use strict";

const video = document.getElementById("video");
const statusLine = document.getElementById("status");
const numbers = document.getElementById("numbers");
const chart = document.getElementById("chart");
const params = new URLSearchParams(location.search);
const source = params.get("channel") || params.get("root") || "";
document.getElementById("source").value = source;

// What the test (and curious users) can read: playback state, errors,
// how far behind the live picture the player is, the low-latency parts
// hls.js loaded, and the stalls since playback began.
window.shoal = {
  fatal: null, errors: [], playing: false, behindMs: null, partsLoaded: 0, stalls: 0,
};

function playlistUrl(id) {
  return id.startsWith("z") ? `/live/${id}/index.m3u8` : `/vod/${id}/index.m3u8`;
}

function play(id) {
  const url = playlistUrl(id);
  statusLine.textContent = `Loading ${url}`;
  if (window.Hls && Hls.isSupported()) {
    // Low-latency mode: on a low-latency channel (its playlist lists
    // parts) hls.js loads parts and keeps the playlist's PART-HOLD-BACK
    // from the live edge; on others, three target durations. Setting
    // liveSyncDurationCount here would override the hold back.
    const hls = new Hls({ lowLatencyMode: true, manifestLoadingMaxRetry: 6 });
    hls.on(Hls.Events.FRAG_LOADED, (_, data) => {
      if (data.part) window.shoal.partsLoaded++;
    });
    hls.on(Hls.Events.ERROR, (_, data) => {
      window.shoal.errors.push(`${data.type}: ${data.details}`);
      if (data.fatal) {
        window.shoal.fatal = `${data.type}: ${data.details}`;
        statusLine.textContent = `Playback failed: ${window.shoal.fatal}`;
      }
    });
    hls.on(Hls.Events.MANIFEST_PARSED, () => video.play().catch(() => {}));
    hls.loadSource(url);
    hls.attachMedia(video);
    // The frame on screen against the wall clock: hls.js dates it from
    // the playlist's EXT-X-PROGRAM-DATE-TIME (when the broadcaster's
    // segment began), so this is the latency the viewer sees, less what
    // the encoder took.
    setInterval(() => {
      if (hls.playingDate && !video.paused) {
        window.shoal.behindMs = Date.now() - hls.playingDate.getTime();
      }
    }, 250);
  } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
    video.src = url; // Safari plays HLS itself.
    video.play().catch(() => {});
  } else {
    statusLine.textContent = "This browser cannot play HLS.";
  }
  video.addEventListener("playing", () => {
    window.shoal.playing = true;
    statusLine.textContent = `Playing ${url}`;
  });
  // Waiting for data once playback has begun: a stall the viewer sees.
  video.addEventListener("waiting", () => {
    if (window.shoal.playing) window.shoal.stalls++;
  });
}

const history = [];
const HISTORY = 120;

function human(bytes) {
  const units = ["B", "kB", "MB", "GB"];
  let i = 0;
  while (bytes >= 1000 && i < units.length - 1) { bytes /= 1000; i++; }
  return `${bytes.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function show(stats) {
  const s = stats.session;
  const behind = window.shoal.behindMs;
  const rows = [
    ["behind live", behind == null ? "–" : `${(behind / 1000).toFixed(1)} s`],
    ["low-latency parts", window.shoal.partsLoaded],
    ["peers", stats.peers],
  ];
  if (s) {
    rows.push(
      ["segments", s.segments],
      ["from peers", human(s.bytes_from_peers)],
      ["from broadcaster", human(s.bytes_from_source)],
      ["from HTTP", human(s.bytes_from_http)],
      ["offload", s.offload == null ? "–" : `${(s.offload * 100).toFixed(1)}%`],
      ["stalls", s.late],
      ["missed", s.missed],
      ["latency p50 / p95", s.latency_p50_ms == null ? "–" : `${s.latency_p50_ms} / ${s.latency_p95_ms} ms`],
      ["startup", s.startup_ms == null ? "–" : `${s.startup_ms} ms`],
    );
  }
  numbers.innerHTML = rows.map(([k, v]) => `<div>${k}<b>${v}</b></div>`).join("");
  history.push({
    peers: s ? s.peers : stats.peers,
    p2p: s ? s.bytes_from_peers : 0,
    http: s ? s.bytes_from_http : 0,
  });
  if (history.length > HISTORY) history.shift();
  draw();
}

function draw() {
  const ctx = chart.getContext("2d");
  const w = chart.width, h = chart.height;
  ctx.clearRect(0, 0, w, h);
  if (history.length < 2) return;
  const maxBytes = Math.max(1, ...history.map((p) => Math.max(p.p2p, p.http)));
  const maxPeers = Math.max(1, ...history.map((p) => p.peers));
  const line = (color, value, max) => {
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    history.forEach((p, i) => {
      const x = (i / (HISTORY - 1)) * w;
      const y = h - 4 - (value(p) / max) * (h - 8);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  };
  line("#2b8a3e", (p) => p.p2p, maxBytes);
  line("#c92a2a", (p) => p.http, maxBytes);
  line("#1c7ed6", (p) => p.peers, maxPeers);
}

async function poll() {
  try {
    const r = await fetch(`/live/${encodeURIComponent(source)}/stats.json`);
    if (r.ok) show(await r.json());
  } catch (e) {
    // The daemon restarting: try again next time.
  }
}

if (source) play(source);
// Live channels have session numbers; an on-demand stream has none.
if (source.startsWith("z")) {
  setInterval(poll, 1000);
  poll();
}

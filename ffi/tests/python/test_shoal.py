"""shoal's Python bindings as an app uses them.

Run by scripts/test after `ffi/generate OUT`:

    SHOAL_FFI_PYTHON=OUT/python python3 -m unittest discover -s ffi/tests/python

Two nodes on loopback: one broadcasts what a synthetic encoder writes,
the other watches it; the app's player reads the playlist and segments
through the viewer's gateway URL and gets the encoder's bytes.
"""

import os
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.environ.get("SHOAL_FFI_PYTHON", "target/ffi/python"))

import shoal  # noqa: E402

SEGMENT_SECONDS = 1.0
SEGMENT_BYTES = 64 * 1024
LISTED = 10


class Encoder(threading.Thread):
    """Writes `count` segments of pseudo-random bytes into `folder`, one a
    second, then the playlist listing them (a live encoder's order)."""

    def __init__(self, folder, count):
        super().__init__(daemon=True)
        self.folder = folder
        self.count = count
        self.stopping = threading.Event()
        os.makedirs(folder, exist_ok=True)

    def segment(self, seq):
        return os.path.join(self.folder, "seg%05d.ts" % seq)

    def run(self):
        for seq in range(self.count):
            if self.stopping.wait(SEGMENT_SECONDS):
                return
            with open(self.segment(seq), "wb") as f:
                f.write(os.urandom(SEGMENT_BYTES))
            first = max(0, seq - LISTED + 1)
            lines = [
                "#EXTM3U",
                "#EXT-X-VERSION:3",
                "#EXT-X-TARGETDURATION:1",
                "#EXT-X-MEDIA-SEQUENCE:%d" % first,
            ]
            for s in range(first, seq + 1):
                lines += ["#EXTINF:%.6f," % SEGMENT_SECONDS, "seg%05d.ts" % s]
            tmp = os.path.join(self.folder, "index.m3u8.tmp")
            with open(tmp, "w") as f:
                f.write("\n".join(lines) + "\n")
            os.replace(tmp, os.path.join(self.folder, "index.m3u8"))


class Recorder(shoal.NodeListener):
    """Keeps every event; raises on the first one, which the node must
    survive."""

    def __init__(self):
        self.events = []
        self.lock = threading.Lock()
        self.raised = False

    def on_event(self, event):
        with self.lock:
            self.events.append(event)
            if not self.raised:
                self.raised = True
                raise RuntimeError("an app's listener that fails")

    def any(self, test):
        with self.lock:
            return any(test(e) for e in self.events)


def wait_for(what, seconds, test):
    deadline = time.monotonic() + seconds
    while not test():
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss: %s" % (seconds, what))
        time.sleep(0.1)


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def config(folder):
    c = shoal.default_config(folder)
    c.mdns = False
    c.upload_policy = shoal.UploadPolicy.ALWAYS
    return c


class TwoNodes(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.nodes = []

    def tearDown(self):
        for node in self.nodes:
            node.stop()
        self.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def start(self, name, listener=None, **settings):
        c = config(self.path(name))
        for k, v in settings.items():
            setattr(c, k, v)
        node = shoal.ShoalNode.start(c, listener)
        self.nodes.append(node)
        return node

    def test_a_viewer_plays_a_broadcast_through_its_gateway(self):
        hls = self.path("hls")
        encoder = Encoder(hls, 40)
        encoder.start()
        self.addCleanup(encoder.stopping.set)
        source = self.start("b")
        heard = Recorder()
        viewer = self.start("v", heard)

        channel = source.create_channel("cam")
        self.assertEqual(source.create_channel("cam"), channel)
        self.assertEqual(source.broadcast("cam", hls), channel)
        self.assertEqual(viewer.connect(source.listen_addrs()[0]), source.peer_id())
        url = viewer.watch(channel)
        self.assertTrue(url.startswith(viewer.gateway_url()))

        checked = set()

        def segments_match():
            status, body = get(url)
            if status != 200:
                return False
            text = body.decode()
            base = url.rsplit("/", 1)[0]
            for uri in [l for l in text.splitlines() if l and not l.startswith("#")]:
                status, data = get(base + "/" + uri)
                self.assertEqual(status, 200, uri)
                seq = int(uri.split("/")[-1].split(".")[0])
                try:
                    with open(encoder.segment(seq), "rb") as f:
                        original = f.read()
                except FileNotFoundError:
                    continue
                self.assertEqual(data, original, "segment %d differs from the encoder's" % seq)
                checked.add(seq)
            return len(checked) >= 3

        wait_for("three segments through the gateway", 90, segments_match)
        stats = viewer.stats()
        self.assertGreaterEqual(stats.peers, 1)
        self.assertGreater(stats.bytes_received, 0)
        ch = stats.channels[0]
        self.assertEqual((ch.channel, ch.url), (channel, url))
        self.assertGreaterEqual(ch.segments, 3)
        self.assertEqual(ch.state, shoal.DeliveryState.P2P)
        self.assertEqual(source.stats().broadcasting, ["cam"])

        wait_for(
            "the listener's events",
            10,
            lambda: heard.any(lambda e: e.is_started() and e.peer_id == viewer.peer_id())
            and heard.any(lambda e: e.is_peers_changed() and e.peers >= 1)
            and heard.any(lambda e: e.is_channel_state() and e.channel == channel)
            and heard.any(lambda e: e.is_stats() and len(e.stats.channels) > 0),
        )
        self.assertTrue(heard.raised)

        source.stop_broadcast("cam")
        with self.assertRaises(shoal.ShoalError.NotFound):
            source.stop_broadcast("cam")
        viewer.unwatch(channel)
        self.assertEqual(viewer.stats().channels, [])

    def test_stop_frees_the_folder_and_bad_input_gets_typed_errors(self):
        node = self.start("n")
        peer = node.peer_id()
        with self.assertRaises(shoal.ShoalError.RepoLocked):
            shoal.ShoalNode.start(config(self.path("n")), None)
        with self.assertRaises(shoal.ShoalError.BadConfig):
            node.watch("nonsense")
        with self.assertRaises(shoal.ShoalError.BadConfig):
            node.connect("not an address")
        with self.assertRaises(shoal.ShoalError.NotFound):
            node.add_file(self.path("missing.mp4"))
        node.stop()
        node.stop()
        with self.assertRaises(shoal.ShoalError.Stopped):
            node.stats()
        again = self.start("n")
        self.assertEqual(again.peer_id(), peer)
        bad = config(self.path("other"))
        bad.cache_segments = 1
        with self.assertRaises(shoal.ShoalError.BadConfig) as refused:
            shoal.ShoalNode.start(bad, None)
        self.assertIn("cache_segments", str(refused.exception))


if __name__ == "__main__":
    unittest.main()

// shoal's Kotlin bindings as an Android app uses them, on the JVM: two
// nodes on loopback, one broadcasting what a synthetic encoder writes, the
// other watching; the app's player reads the playlist and segments through
// the viewer's gateway URL and must get the encoder's bytes. Exits 1 with
// the reason on the first check that fails.
//
// Built and run by scripts/test (after `ffi/generate OUT`):
//   kotlinc -Werror -cp jna.jar OUT/kotlin/uniffi/shoal/shoal.kt Main.kt -include-runtime -d test.jar
//   java -Djna.library.path=OUT/kotlin -cp test.jar:jna.jar MainKt

import java.io.File
import java.net.HttpURLConnection
import java.net.URI
import java.nio.file.Files
import java.util.Collections
import kotlin.concurrent.thread
import kotlin.system.exitProcess
import uniffi.shoal.DeliveryState
import uniffi.shoal.MobileConfig
import uniffi.shoal.NodeEvent
import uniffi.shoal.NodeListener
import uniffi.shoal.ShoalException
import uniffi.shoal.ShoalNode
import uniffi.shoal.UploadPolicy
import uniffi.shoal.defaultConfig

const val SEGMENT_MS = 1000L
const val SEGMENT_BYTES = 64 * 1024
const val LISTED = 10

fun check(ok: Boolean, what: () -> String) {
    if (!ok) throw IllegalStateException(what())
}

fun waitFor(what: String, seconds: Long, test: () -> Boolean) {
    val deadline = System.nanoTime() + seconds * 1_000_000_000
    while (!test()) {
        check(System.nanoTime() < deadline) { "timed out after ${seconds}s: $what" }
        Thread.sleep(100)
    }
}

/** Writes [count] segments of random bytes into [dir], one a second, then
 *  the playlist listing them (a live encoder's order). */
class Encoder(val dir: File, val count: Int) {
    @Volatile var stopping = false

    fun segment(seq: Int) = File(dir, "seg%05d.ts".format(seq))

    fun start() = thread(isDaemon = true) {
        dir.mkdirs()
        val random = java.util.Random(7)
        for (seq in 0 until count) {
            Thread.sleep(SEGMENT_MS)
            if (stopping) return@thread
            val data = ByteArray(SEGMENT_BYTES)
            random.nextBytes(data)
            segment(seq).writeBytes(data)
            val first = maxOf(0, seq - LISTED + 1)
            val text = StringBuilder("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n")
            text.append("#EXT-X-MEDIA-SEQUENCE:$first\n")
            for (s in first..seq) text.append("#EXTINF:1.000000,\nseg%05d.ts\n".format(s))
            val tmp = File(dir, "index.m3u8.tmp")
            tmp.writeText(text.toString())
            Files.move(tmp.toPath(), File(dir, "index.m3u8").toPath(), java.nio.file.StandardCopyOption.ATOMIC_MOVE)
        }
    }
}

/** Keeps every event; throws on the first, which the node must survive. */
class Recorder : NodeListener {
    val events: MutableList<NodeEvent> = Collections.synchronizedList(mutableListOf())
    @Volatile var threw = false

    override fun onEvent(event: NodeEvent) {
        events.add(event)
        if (!threw) {
            threw = true
            throw RuntimeException("an app's listener that fails")
        }
    }

    fun any(test: (NodeEvent) -> Boolean) = synchronized(events) { events.any(test) }
}

fun get(url: String): Pair<Int, ByteArray> {
    val c = URI(url).toURL().openConnection() as HttpURLConnection
    c.connectTimeout = 30_000
    c.readTimeout = 30_000
    return try {
        val status = c.responseCode
        val body = (if (status < 400) c.inputStream else c.errorStream)?.readBytes() ?: ByteArray(0)
        Pair(status, body)
    } finally {
        c.disconnect()
    }
}

fun config(dir: File): MobileConfig =
    defaultConfig(dir.path).copy(mdns = false, uploadPolicy = UploadPolicy.ALWAYS)

fun twoNodes(tmp: File) {
    val encoder = Encoder(File(tmp, "hls"), 40)
    encoder.start()
    val source = ShoalNode.start(config(File(tmp, "b")), null)
    val heard = Recorder()
    val viewer = ShoalNode.start(config(File(tmp, "v")), heard)
    try {
        val channel = source.createChannel("cam")
        check(source.createChannel("cam") == channel) { "a second create_channel made another channel" }
        check(source.broadcast("cam", encoder.dir.path) == channel) { "broadcast named another channel" }
        check(viewer.connect(source.listenAddrs()[0]) == source.peerId()) { "connected to another peer" }
        val url = viewer.watch(channel)
        check(url.startsWith(viewer.gatewayUrl())) { "$url is not on the gateway" }

        val checked = mutableSetOf<Int>()
        waitFor("three segments through the gateway", 90) {
            val (status, body) = get(url)
            if (status != 200) return@waitFor false
            val base = url.substringBeforeLast('/')
            for (uri in String(body).lines().filter { it.isNotEmpty() && !it.startsWith("#") }) {
                val (s, data) = get("$base/$uri")
                check(s == 200) { "$uri: status $s" }
                val seq = uri.substringAfterLast('/').substringBefore('.').toInt()
                val original = encoder.segment(seq)
                if (original.exists()) {
                    check(data.contentEquals(original.readBytes())) { "segment $seq differs from the encoder's" }
                    checked.add(seq)
                }
            }
            checked.size >= 3
        }
        val stats = viewer.stats()
        check(stats.peers >= 1u && stats.bytesReceived > 0uL) { "no peer or no bytes: $stats" }
        val ch = stats.channels[0]
        check(ch.channel == channel && ch.url == url) { "the wrong channel: $ch" }
        check(ch.segments >= 3uL && ch.state == DeliveryState.P2P) { "$ch" }
        check(source.stats().broadcasting == listOf("cam")) { "${source.stats()}" }

        waitFor("the listener's events", 10) {
            heard.any { it is NodeEvent.Started && it.peerId == viewer.peerId() } &&
                heard.any { it is NodeEvent.PeersChanged && it.peers >= 1u } &&
                heard.any { it is NodeEvent.ChannelState && it.channel == channel } &&
                heard.any { it is NodeEvent.Stats && it.stats.channels.isNotEmpty() }
        }
        check(heard.threw) { "the listener was never called" }

        source.stopBroadcast("cam")
        try {
            source.stopBroadcast("cam")
            check(false) { "a stopped broadcast stopped again" }
        } catch (e: ShoalException.NotFound) {
        }
        viewer.unwatch(channel)
        check(viewer.stats().channels.isEmpty()) { "still watching" }
    } finally {
        encoder.stopping = true
        viewer.stop()
        source.stop()
    }
}

fun stopAndBadInput(tmp: File) {
    val dir = File(tmp, "n")
    val node = ShoalNode.start(config(dir), null)
    val peer = node.peerId()
    try {
        ShoalNode.start(config(dir), null)
        check(false) { "two nodes on one folder" }
    } catch (e: ShoalException.RepoLocked) {
    }
    try {
        node.watch("nonsense")
        check(false) { "watched a nonsense channel" }
    } catch (e: ShoalException.BadConfig) {
    }
    node.stop()
    try {
        node.stats()
        check(false) { "a stopped node answered" }
    } catch (e: ShoalException.Stopped) {
    }
    val again = ShoalNode.start(config(dir), null)
    check(again.peerId() == peer) { "the identity was not kept" }
    again.stop()
    try {
        ShoalNode.start(config(File(tmp, "other")).copy(cacheSegments = 1u), null)
        check(false) { "started with one cached segment" }
    } catch (e: ShoalException.BadConfig) {
        check(e.message.contains("cache_segments")) { "unclear: ${e.message}" }
    }
}

fun main() {
    val tmp = Files.createTempDirectory("shoal-kotlin").toFile()
    try {
        twoNodes(tmp)
        println("ok: a viewer plays a broadcast through its gateway")
        stopAndBadInput(tmp)
        println("ok: stop frees the folder, bad input gets typed errors")
    } catch (e: Throwable) {
        System.err.println("FAILED: $e")
        e.printStackTrace()
        exitProcess(1)
    } finally {
        tmp.deleteRecursively()
    }
    exitProcess(0)
}

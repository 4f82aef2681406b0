// A helia node (IPFS in JavaScript) for shoal's Bitswap interop test.
//
//   node helia.mjs fetch <multiaddr> <cid>...  dial a shoal node, fetch each
//                                             block over Bitswap, print
//                                             "<cid> <sha256 hex> <length>"
//   node helia.mjs serve <hex bytes>          hold one raw block, print
//                                             "ready <multiaddr> <cid>",
//                                             serve until stdin closes
//
// Only TCP, noise, yamux, identify and Bitswap: no DHT, no HTTP gateways,
// nothing that reaches past 127.0.0.1.

// Node 20 lacks Promise.withResolvers, which libp2p 3 uses.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function () {
    let resolve, reject
    const promise = new Promise((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

const { createHeliaLight } = await import('helia')
const { withLibp2pLight } = await import('@helia/libp2p')
const { withBitswap } = await import('@helia/bitswap')
const { tcp } = await import('@libp2p/tcp')
const { noise } = await import('@chainsafe/libp2p-noise')
const { yamux } = await import('@chainsafe/libp2p-yamux')
const { identify } = await import('@libp2p/identify')
const { multiaddr } = await import('@multiformats/multiaddr')
const { CID } = await import('multiformats/cid')
const { sha256 } = await import('multiformats/hashes/sha2')
const { createHash } = await import('node:crypto')

const node = withBitswap(withLibp2pLight(createHeliaLight(), {
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: { identify: identify() }
}))
await node.start()

const [mode, ...args] = process.argv.slice(2)
try {
  if (mode === 'fetch') {
    const [addr, ...cids] = args
    await node.libp2p.dial(multiaddr(addr))
    for (const text of cids) {
      const chunks = []
      for await (const chunk of node.blockstore.get(CID.parse(text), { signal: AbortSignal.timeout(30000) })) {
        chunks.push(chunk)
      }
      const bytes = Buffer.concat(chunks)
      console.log(`${text} ${createHash('sha256').update(bytes).digest('hex')} ${bytes.length}`)
    }
  } else if (mode === 'serve') {
    const bytes = Buffer.from(args[0], 'hex')
    const cid = CID.createV1(0x55, await sha256.digest(bytes))
    await node.blockstore.put(cid, bytes)
    console.log(`ready ${node.libp2p.getMultiaddrs()[0].toString()} ${cid.toString()}`)
    await new Promise((resolve) => {
      process.stdin.on('end', resolve)
      process.stdin.on('close', resolve)
      process.stdin.resume()
    })
  } else {
    throw new Error(`unknown mode ${mode}`)
  }
} finally {
  await node.stop()
}
process.exit(0)

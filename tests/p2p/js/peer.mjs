// A js-libp2p peer for the interop test: proves taonode speaks real libp2p (Noise, yamux,
// GossipSub).  Prints "READY <multiaddr>" and then "MSG <topic> <hex>" for every message;
// publishes the hex payload given with --publish (once a subscriber is known) and re-sends it
// every 500 ms (gossip is lossy until the mesh forms) until stdin closes.

// Node 20 lacks Promise.withResolvers, which libp2p 3.x calls (Node 22 has it).
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function () {
    let resolve, reject
    const promise = new Promise((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

const { createLibp2p } = await import('libp2p')
const { tcp } = await import('@libp2p/tcp')
const { noise } = await import('@chainsafe/libp2p-noise')
const { yamux } = await import('@chainsafe/libp2p-yamux')
const { gossipsub } = await import('@libp2p/gossipsub')
const { identify } = await import('@libp2p/identify')
const { multiaddr } = await import('@multiformats/multiaddr')

const args = process.argv.slice(2)
const opt = (name) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : undefined }
const topic = opt('--topic')
const dial = opt('--dial')
const payload = opt('--publish')

const node = await createLibp2p({
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: {
    identify: identify(), // gossipsub refuses to start without it
    pubsub: gossipsub({ allowPublishToZeroTopicPeers: false, heartbeatInterval: 1000 })
  }
})
node.services.pubsub.addEventListener('message', (evt) => {
  const m = evt.detail
  process.stdout.write(`MSG ${m.topic} ${Buffer.from(m.data).toString('hex')}\n`)
})
node.services.pubsub.subscribe(topic)
await node.start()
process.stdout.write(`READY ${node.getMultiaddrs()[0].toString()}\n`)
if (dial) await node.dial(multiaddr(dial))

let timer
if (payload) {
  const data = Buffer.from(payload, 'hex')
  timer = setInterval(async () => {
    // Publishing before the py subscription arrived throws NoPeersSubscribedToTopic.
    if (node.services.pubsub.getSubscribers(topic).length === 0) return
    try { await node.services.pubsub.publish(topic, data) } catch (e) { process.stderr.write(`${e}\n`) }
  }, 500)
}
const stop = async () => { clearInterval(timer); await node.stop(); process.exit(0) }
process.stdin.on('end', stop)
process.stdin.resume()
process.on('SIGTERM', stop)

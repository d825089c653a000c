// Shared by the p2p interop checks: the Node 20 polyfill Helia needs, a Helia node on libp2p
// locked down to talk to nothing but our nodes on 127.0.0.1, and small helpers.
//
// Locked down means: TCP on 127.0.0.1 only, no bootstrap list, no mDNS, no delegated routers
// (delegated-ipfs.dev), no trustless gateways, no relays or NAT traversal: the only peers are
// those a check dials. Blocks come over Bitswap from those peers.

import '../lib/node20.mjs'

const { createHeliaLight } = await import('helia')
const { withLibp2pLight } = await import('@helia/libp2p')
const { withBitswap } = await import('@helia/bitswap')
const { tcp } = await import('@libp2p/tcp')
const { noise } = await import('@libp2p/noise')
const { yamux } = await import('@libp2p/yamux')
const { identify } = await import('@libp2p/identify')
const { ping } = await import('@libp2p/ping')
const { kadDHT, passthroughMapper, removePublicAddressesMapper } = await import('@libp2p/kad-dht')
const { gossipsub } = await import('@libp2p/gossipsub')
const { fetch } = await import('@libp2p/fetch')
const { unixfs } = await import('@helia/unixfs')
const { sha256 } = await import('multiformats/hashes/sha2')
const { toString } = await import('uint8arrays/to-string')
const { multiaddr } = await import('@multiformats/multiaddr')

/** The WAN DHT protocol (kubo's and the public network's). */
export const WAN_DHT = '/ipfs/kad/1.0.0'
/** kubo's LAN DHT protocol. */
export const LAN_DHT = '/ipfs/lan/kad/1.0.0'

/**
 * A started Helia node on libp2p with only the services asked for:
 * `dht` (a protocol, or null for none), `pubsub` (gossipsub), `fetch` (libp2p fetch).
 */
export async function lockedDownHelia ({ dht = null, pubsub = false, fetchService = false } = {}) {
  const services = { identify: identify(), ping: ping() }
  if (dht != null) {
    services.dht = kadDHT({
      protocol: dht,
      clientMode: false,
      // kubo's LAN DHT keeps private and loopback addresses only; on 127.0.0.1 the WAN one
      // must keep them too, or it would have no peers at all.
      peerInfoMapper: dht === LAN_DHT ? removePublicAddressesMapper : passthroughMapper
    })
  }
  if (pubsub) {
    services.pubsub = gossipsub({ allowPublishToZeroTopicPeers: true, emitSelf: false })
  }
  if (fetchService) {
    services.fetch = fetch()
  }
  const helia = withBitswap(withLibp2pLight(createHeliaLight(), {
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    peerDiscovery: [],
    services
  }))
  await helia.start()
  for (const addr of helia.libp2p.getMultiaddrs()) {
    assert(addr.toString().startsWith('/ip4/127.0.0.1/'), `Helia listens on ${addr}`)
  }
  return helia
}

/** Dials our node at a multiaddr (`/ip4/127.0.0.1/tcp/<port>/p2p/<id>`). */
export async function dial (helia, addr) {
  assert(addr.startsWith('/ip4/127.0.0.1/'), `only loopback is dialled, not ${addr}`)
  return helia.libp2p.dial(multiaddr(addr))
}

/**
 * Walks `docker/registry/v2/blobs/sha256/` of the tree at `root` (fetching blocks over Bitswap)
 * and checks that every blob's sha256 equals the digest its path names. Returns the digests.
 */
export async function checkBlobs (helia, root) {
  const fs = unixfs(helia)
  const digests = []
  for await (const prefix of fs.ls(root, { path: 'docker/registry/v2/blobs/sha256' })) {
    for await (const entry of fs.ls(prefix.cid)) {
      const hasher = []
      for await (const chunk of fs.cat(entry.cid, { path: 'data' })) hasher.push(chunk)
      const bytes = Buffer.concat(hasher)
      const digest = toString((await sha256.digest(bytes)).digest, 'base16')
      assert(digest === entry.name, `blob ${entry.name} hashes to ${digest}`)
      assert(entry.name.startsWith(prefix.name), `blob ${entry.name} under ${prefix.name}/`)
      digests.push(`sha256:${digest}`)
    }
  }
  return digests
}

/** Retries `fn` until it returns a value (not null/undefined) or `ms` pass. */
export async function retry (what, ms, fn) {
  const deadline = Date.now() + ms
  let last
  while (Date.now() < deadline) {
    try {
      const value = await fn()
      if (value != null) return value
    } catch (err) {
      last = err
    }
    await new Promise(resolve => setTimeout(resolve, 250))
  }
  throw new Error(`${what}: nothing within ${ms} ms${last == null ? '' : ` (last error: ${last.message})`}`)
}

/** An environment variable the runner must set. */
export function env (name) {
  const value = process.env[name]
  if (value == null || value === '') throw new Error(`${name} is not set`)
  return value
}

/** Throws unless `condition` holds. */
export function assert (condition, what) {
  if (!condition) throw new Error(what)
}

// Resolves our writer's IPNS name from Helia over one router at a time, checks the record with
// the JS `ipns` package's validator, then walks the tree over Bitswap and checks every blob's
// sha256 against its digest. With a DHT router, also looks up the providers of the root (as
// `ipfs routing findprovs` does) and expects the writer among them, with an address.
//
// env: WRITER_ADDR (/ip4/127.0.0.1/tcp/<port>/p2p/<id>), IPNS_NAME (k51...), EXPECT_ROOT (the CID
// the writer's record names), EXPECT_BLOBS (space-separated sha256:<hex> that must be there),
// ROUTER: dht (kad-dht on /ipfs/kad/1.0.0), dht-lan (kad-dht on /ipfs/lan/kad/1.0.0, as kubo runs
// on a LAN), fetch (libp2p fetch alone), pubsub (@helia/ipns's pubsub router, no DHT at all).
import { assert, checkBlobs, dial, env, lockedDownHelia, retry, LAN_DHT, WAN_DHT } from './lib.mjs'

const { ipns, pubSubIPNSRouting } = await import('@helia/ipns')
const { multihashToIPNSRoutingKey, unmarshalIPNSRecord, marshalIPNSRecord } = await import('ipns')
const { ipnsValidator } = await import('ipns/validator')
const { peerIdFromString } = await import('@libp2p/peer-id')
const { CID } = await import('multiformats/cid')

const router = env('ROUTER')
const writerAddr = env('WRITER_ADDR')
const name = peerIdFromString(env('IPNS_NAME'))
const expectRoot = env('EXPECT_ROOT')
const expectBlobs = env('EXPECT_BLOBS').split(/\s+/).filter(b => b !== '')
const routingKey = multihashToIPNSRoutingKey(name.toMultihash())
const WAIT = 30_000

const setup = {
  dht: { dht: WAN_DHT },
  'dht-lan': { dht: LAN_DHT },
  fetch: { fetchService: true },
  pubsub: { pubsub: true, fetchService: true }
}[router]
assert(setup != null, `unknown ROUTER ${router}`)
const helia = await lockedDownHelia(setup)
try {
  const started = Date.now()
  await dial(helia, writerAddr)
  let marshalled
  if (router === 'fetch') {
    const writer = peerIdFromString(writerAddr.split('/p2p/')[1])
    marshalled = await retry('fetch', WAIT, () => helia.libp2p.services.fetch.fetch(writer, routingKey))
  } else {
    const routers = []
    if (router === 'pubsub') {
      // Built on a started node (it needs libp2p), so it is started here, not by Helia.
      const pubsub = pubSubIPNSRouting(helia)
      await pubsub.start()
      routers.push(pubsub)
    }
    const name_ = ipns(helia, { routers })
    const resolved = await retry(`resolve over ${router}`, WAIT, async () => {
      for await (const result of name_.resolve(name, { nocache: true })) return result
    })
    marshalled = marshalIPNSRecord(resolved.record)
  }
  const took = Date.now() - started
  // Throws on a bad signature, an expired record, or V1 fields that disagree with the data.
  await ipnsValidator(routingKey, marshalled)
  const record = unmarshalIPNSRecord(marshalled)
  assert(record.value === `/ipfs/${expectRoot}`, `record names ${record.value}, expected /ipfs/${expectRoot}`)
  const digests = await checkBlobs(helia, CID.parse(expectRoot))
  for (const blob of expectBlobs) assert(digests.includes(blob), `blob ${blob} not in the tree`)
  if (setup.dht != null) {
    const writer = peerIdFromString(writerAddr.split('/p2p/')[1])
    const provider = await retry('find providers of the root', WAIT, async () => {
      for await (const found of helia.libp2p.contentRouting.findProviders(CID.parse(expectRoot))) {
        if (found.id.equals(writer)) return found
      }
    })
    assert(provider.multiaddrs.length > 0, 'the writer is a provider of the root, but with no address')
    console.log(`the writer provides the root, at ${provider.multiaddrs.map(String).join(' ')}`)
  }
  console.log(`resolved ${env('IPNS_NAME')} over ${router} in ${took} ms: sequence ${record.sequence}, ${digests.length} blobs verified`)
} finally {
  await helia.stop()
}

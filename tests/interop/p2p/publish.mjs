// The reverse direction: Helia holds a registry tree (every block of our writer's tree, fetched
// over Bitswap), publishes it under its own IPNS name (a V1+V2 record, then a V2-only one), and a
// replica of ours that follows Helia's name accepts both records and serves the image.
//
// env: WRITER_ADDR, WRITER_PID (killed once Helia holds the tree, so that the replica can get
// blocks from Helia only), EXPECT_ROOT (the writer's root), BIN (our binary), WORK (a scratch
// directory), REPO, TAG, EXPECT_MANIFEST (sha256:<hex> of the manifest at REPO:TAG).
import { spawn, execFileSync } from 'node:child_process'
import { createInterface } from 'node:readline'
import { createHash } from 'node:crypto'
import { assert, dial, env, lockedDownHelia, retry, LAN_DHT } from './lib.mjs'

const { ipns, pubSubIPNSRouting } = await import('@helia/ipns')
const { CID } = await import('multiformats/cid')

const bin = env('BIN')
const work = env('WORK')
const root = CID.parse(env('EXPECT_ROOT'))
const WAIT = 60_000

const helia = await lockedDownHelia({ dht: LAN_DHT, pubsub: true, fetchService: true })
let replica
try {
  // Every block of the tree, kept (pinned) in Helia's own store.
  const writer = await dial(helia, env('WRITER_ADDR'))
  for await (const _ of helia.pins.add(root)) { /* each block fetched and pinned */ }
  await helia.libp2p.hangUp(writer.remotePeer)
  process.kill(Number(env('WRITER_PID')), 'SIGKILL')

  const pubsub = pubSubIPNSRouting(helia)
  await pubsub.start()
  const name = ipns(helia, { routers: [pubsub] })
  const first = await name.publish('registry', root)
  assert(first.record.signatureV1 != null && first.record.value != null, 'first record has V1 fields')
  const heliaName = first.name.replace('/ipns/', '')
  const heliaAddr = helia.libp2p.getMultiaddrs().find(a => a.toString().includes('/tcp/')).toString()
  console.log(`Helia publishes ${root} as ${heliaName} (sequence ${first.record.sequence}, V1+V2)`)

  // Our replica follows Helia's name with Helia as its only peer.
  const dir = `${work}/replica-of-helia`
  execFileSync(bin, ['--data-dir', dir, 'init', '--role', 'replica'], { stdio: 'ignore' })
  replica = spawn(bin, ['--data-dir', dir, 'serve', '--listen', '127.0.0.1:0',
    '--p2p-listen', '/ip4/127.0.0.1/tcp/0', '--no-mdns', '--follow', heliaName, '--peer', heliaAddr],
  { stdio: ['ignore', 'pipe', 'inherit'] })
  const url = await new Promise((resolve, reject) => {
    const lines = createInterface({ input: replica.stdout })
    lines.on('line', line => {
      if (line.startsWith('listening on http://')) resolve(line.slice('listening on '.length).trim())
    })
    replica.on('exit', code => reject(new Error(`replica exited (${code})`)))
  })
  const status = () => JSON.parse(execFileSync(bin, ['--data-dir', dir, 'status', '--json']).toString())
  const sequence = () => status().followed[0]?.sequence

  await retry('the replica accepting the V1+V2 record', WAIT, () => sequence() === 1 ? true : null)
  const manifestUrl = `${url}/v2/${env('REPO')}/manifests/${env('TAG')}`
  const manifest = await retry('the replica serving the image', WAIT, async () => {
    const resp = await globalThis.fetch(manifestUrl, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } })
    return resp.status === 200 ? Buffer.from(await resp.arrayBuffer()) : null
  })
  const digest = `sha256:${createHash('sha256').update(manifest).digest('hex')}`
  assert(digest === env('EXPECT_MANIFEST'), `replica served manifest ${digest}`)
  for (const layer of JSON.parse(manifest.toString()).layers) {
    const resp = await globalThis.fetch(`${url}/v2/${env('REPO')}/blobs/${layer.digest}`)
    assert(resp.status === 200, `blob ${layer.digest}: HTTP ${resp.status}`)
    const got = `sha256:${createHash('sha256').update(Buffer.from(await resp.arrayBuffer())).digest('hex')}`
    assert(got === layer.digest, `blob ${layer.digest} came back as ${got}`)
  }
  console.log(`our replica follows ${heliaName} and serves ${env('REPO')}:${env('TAG')} from Helia's blocks`)

  const second = await name.publish('registry', root, { v1Compatible: false })
  assert(second.record.signatureV1 == null && second.record.value == null, 'second record is V2-only')
  await retry('the replica accepting the V2-only record', WAIT, () => sequence() === 2 ? true : null)
  console.log('our replica accepted Helia\'s V2-only record (sequence 2)')
} finally {
  replica?.kill('SIGKILL')
  await helia.stop()
}

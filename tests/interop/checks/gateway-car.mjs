// Our gateway's CAR answers, read and verified by @ipld/car and multiformats: content types,
// roots, block order for each dag-scope, entity-bytes, and the 400 and 404 cases.
import { assert, assertEqual, env, gatewayUrl } from '../lib/helia.mjs'
import { dfsOrder, links, readVerifiedCar } from '../lib/car.mjs'

const gateway = gatewayUrl()
const root = env('ROOT_CID')
const blobPath = env('BLOB_PATH')

async function car (query, accept = 'application/vnd.ipld.car') {
  const resp = await fetch(`${gateway}/ipfs/${root}/${blobPath}?${query}`, { headers: { accept } })
  assertEqual(resp.status, 200, `status of ${query}`)
  const type = resp.headers.get('content-type')
  assert(type.startsWith('application/vnd.ipld.car'), `content type ${type}`)
  assert(type.includes('version=1') && type.includes('order=dfs'), `CAR parameters in ${type}`)
  const pathRoots = resp.headers.get('x-ipfs-roots').split(',')
  const body = new Uint8Array(await resp.arrayBuffer())
  const { roots, blocks } = await readVerifiedCar(body)
  assertEqual(roots, [root], `CAR roots of ${query}`)
  return { type, pathRoots, blocks }
}

// dag-scope=all: the path's blocks, then the file's DAG depth-first.
const all = await car('dag-scope=all')
assert(all.type.includes('dups=n'), `dups in ${all.type}`)
const segments = blobPath.split('/').length
assert(all.pathRoots.length === segments + 1, `X-Ipfs-Roots has one CID per step: ${all.pathRoots}`)
assertEqual(all.blocks[0].cid, root, 'the first block is the root')
const file = all.pathRoots[all.pathRoots.length - 1]
const byCid = new Map(all.blocks.map(b => [b.cid, b.bytes]))
const fileIndex = all.blocks.findIndex(b => b.cid === file)
assert(fileIndex > 0, 'the file root is in the CAR')
const fileObject = all.blocks[fileIndex].cidObject
assertEqual(all.blocks.slice(fileIndex).map(b => b.cid), dfsOrder(fileObject, byCid), 'depth-first order of the file')
const leaves = links(byCid.get(file)).map(String)
assert(leaves.length >= 3, `the blob spans several blocks (${leaves.length})`)

// Each step of the path resolves through the blocks before the file.
for (let i = 0; i < all.pathRoots.length - 1; i++) {
  assert(byCid.has(all.pathRoots[i]), `path block ${all.pathRoots[i]} is in the CAR`)
}

// dag-scope=block: the path and the file's root block, nothing of its leaves.
const block = await car('dag-scope=block')
assertEqual(block.blocks[block.blocks.length - 1].cid, file, 'the last block is the file root')
assert(!block.blocks.some(b => leaves.includes(b.cid)), 'dag-scope=block sends no leaf')

// dag-scope=entity with entity-bytes: only the leaves holding the range.
const first = await car('dag-scope=entity&entity-bytes=0:0')
assertEqual(first.blocks.slice(-2).map(b => b.cid), [file, leaves[0]], 'entity-bytes=0:0')
const last = await car('format=car&entity-bytes=-1:*', '*/*')
assertEqual(last.blocks.slice(-2).map(b => b.cid), [file, leaves[leaves.length - 1]], 'entity-bytes=-1:*')
const entity = await car('dag-scope=entity')
assertEqual(entity.blocks.slice(-leaves.length).map(b => b.cid), leaves, 'dag-scope=entity: the whole file')

// 400 and 404.
for (const [path, status] of [
  ['/ipfs/not-a-cid?format=car', 400],
  [`/ipfs/${root}?format=car&dag-scope=most`, 400],
  [`/ipfs/${root}?format=car&entity-bytes=x:y`, 400],
  [`/ipfs/${root}/no/such/path?format=car`, 404]
]) {
  const resp = await fetch(`${gateway}${path}`)
  assertEqual(resp.status, status, path)
}
console.log('gateway-car: roots, order, scopes and entity-bytes verified')

// @helia/verified-fetch, with our gateway as its only source of blocks, fetches and
// verifies content from it: a file by path, a raw block and a CAR, with their content types.
import { assert, assertEqual, env, lockedDownHelia } from '../lib/helia.mjs'
import { readFileSync } from 'node:fs'
import { equals } from 'uint8arrays/equals'

const { createVerifiedFetchWithHelia } = await import('@helia/verified-fetch')
const root = env('ROOT_CID')
const blobPath = env('BLOB_PATH')
const expected = new Uint8Array(readFileSync(env('BLOB_FILE')))

const helia = await lockedDownHelia()
const verifiedFetch = await createVerifiedFetchWithHelia(helia)
try {
  const file = await verifiedFetch(`ipfs://${root}/${blobPath}`)
  assertEqual(file.status, 200, 'status of the file')
  const bytes = new Uint8Array(await file.arrayBuffer())
  assert(equals(bytes, expected), `verified-fetch returned ${bytes.length} bytes, not the blob's ${expected.length}`)

  const raw = await verifiedFetch(`ipfs://${root}`, { headers: { accept: 'application/vnd.ipld.raw' } })
  assertEqual(raw.status, 200, 'status of the raw block')
  assertEqual(raw.headers.get('content-type'), 'application/vnd.ipld.raw', 'raw content type')

  const car = await verifiedFetch(`ipfs://${root}/${blobPath}`, { headers: { accept: 'application/vnd.ipld.car' } })
  assertEqual(car.status, 200, 'status of the CAR')
  assert(car.headers.get('content-type').startsWith('application/vnd.ipld.car'), 'CAR content type')
  await car.arrayBuffer()
} finally {
  await verifiedFetch.stop()
  await helia.stop()
}
console.log('gateway-verified-fetch: file, raw block and CAR verified')

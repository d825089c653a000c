// Helia's trustless-gateway block broker takes every block of a blob from our gateway
// (checking each against its CID) and @helia/unixfs reassembles the file.
import { assert, env, lockedDownHelia } from '../lib/helia.mjs'
import { readFileSync } from 'node:fs'
import { CID } from 'multiformats/cid'
import { concat } from 'uint8arrays/concat'
import { equals } from 'uint8arrays/equals'

const { unixfs } = await import('@helia/unixfs')
const root = CID.parse(env('ROOT_CID'))
const blobPath = env('BLOB_PATH')
const expected = new Uint8Array(readFileSync(env('BLOB_FILE')))

const helia = await lockedDownHelia()
try {
  const chunks = []
  for await (const chunk of unixfs(helia).cat(root, { path: blobPath })) chunks.push(chunk)
  const bytes = concat(chunks)
  assert(equals(bytes, expected), `unixfs cat returned ${bytes.length} bytes, not the blob's ${expected.length}`)
} finally {
  await helia.stop()
}
console.log('gateway-block-broker: the blob reassembled from verified blocks')

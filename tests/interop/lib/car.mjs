// Reading a CAR from our gateway the way a client that trusts nobody does: @ipld/car parses it,
// and every block is hashed here and compared with its CID.
import { CarBlockIterator } from '@ipld/car'
import * as dagPb from '@ipld/dag-pb'
import { sha256 } from 'multiformats/hashes/sha2'
import { equals } from 'uint8arrays/equals'

/** Roots and blocks ([{cid, bytes}]) of a CAR body, each block verified against its CID. */
export async function readVerifiedCar (body) {
  const iterator = await CarBlockIterator.fromBytes(body)
  const roots = (await iterator.getRoots()).map(String)
  const blocks = []
  for await (const { cid, bytes } of iterator) {
    if (cid.multihash.code === 0x00) {
      if (!equals(cid.multihash.digest, bytes)) throw new Error(`identity block ${cid} does not match`)
    } else if (cid.multihash.code === sha256.code) {
      const digest = await sha256.digest(bytes)
      if (!equals(digest.digest, cid.multihash.digest)) throw new Error(`block ${cid} does not match its CID`)
    } else {
      throw new Error(`block ${cid}: unexpected hash 0x${cid.multihash.code.toString(16)}`)
    }
    blocks.push({ cid: cid.toString(), cidObject: cid, bytes })
  }
  return { roots, blocks }
}

/** The CIDs of the DAG at `cid`, depth-first pre-order, links in order, each once, walked in
 * `blocks` (a Map of CID string to bytes): the order the trustless gateway spec asks of
 * `dag-scope=all` with `order=dfs`. */
export function dfsOrder (cid, blocks) {
  const out = []
  const seen = new Set()
  const stack = [cid]
  while (stack.length > 0) {
    const next = stack.pop()
    const key = next.toString()
    if (seen.has(key)) continue
    seen.add(key)
    out.push(key)
    if (next.code === dagPb.code) {
      const bytes = blocks.get(key)
      if (bytes == null) throw new Error(`block ${key} is missing from the CAR`)
      const node = dagPb.decode(bytes)
      for (const link of [...node.Links].reverse()) stack.push(link.Hash)
    }
  }
  return out
}

/** The dag-pb links of a block, in order. */
export function links (bytes) {
  return dagPb.decode(bytes).Links.map(l => l.Hash)
}

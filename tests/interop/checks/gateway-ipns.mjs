// The IPNS record our gateway serves for the writer's name validates with the ipns package
// (signature, validity, the name's key) and points to the published root.
import { assertEqual, env, gatewayUrl } from '../lib/helia.mjs'
import { ipnsValidator } from 'ipns/validator'
import { multihashToIPNSRoutingKey, unmarshalIPNSRecord } from 'ipns'
import { base36 } from 'multiformats/bases/base36'
import { CID } from 'multiformats/cid'

const name = env('IPNS_NAME')
const root = env('ROOT_CID')
const resp = await fetch(`${gatewayUrl()}/ipns/${name}`, {
  headers: { accept: 'application/vnd.ipfs.ipns-record' }
})
assertEqual(resp.status, 200, 'status of the record')
assertEqual(resp.headers.get('content-type'), 'application/vnd.ipfs.ipns-record', 'record content type')
const bytes = new Uint8Array(await resp.arrayBuffer())
const key = CID.parse(name, base36)
await ipnsValidator(multihashToIPNSRoutingKey(key.multihash), bytes)
const record = unmarshalIPNSRecord(bytes)
assertEqual(record.value, `/ipfs/${root}`, 'the record names the root')

const missing = await fetch(`${gatewayUrl()}/ipns/${name}/no/such/path?format=car`)
assertEqual(missing.status, 404, 'a missing path below the name')
console.log('gateway-ipns: record validated')

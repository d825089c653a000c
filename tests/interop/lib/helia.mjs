// Shared by every interop check: the Node 20 polyfill Helia needs, a Helia node locked down to
// talk to nothing but our own node on 127.0.0.1, and small assertion helpers.
//
// Locked down means: no libp2p at all here (@helia/http), no delegated routers (the default,
// delegated-ipfs.dev, would reach the internet), no default public gateways: the routers are
// one that finds no providers (see noProviders) and a fallback router that names our gateway as
// the provider of every CID, and the only block broker is the trustless-gateway broker, which
// checks every block against its CID.

import './node20.mjs'

const { createHeliaLight } = await import('helia')
const { withHTTP } = await import('@helia/http')

/** The gateway under test, from the runner script. */
export function gatewayUrl () {
  const url = process.env.GATEWAY_URL
  if (url == null || !/^http:\/\/127\.0\.0\.1:\d+$/.test(url)) {
    throw new Error(`GATEWAY_URL must be http://127.0.0.1:<port>, got ${url}`)
  }
  return url
}

/**
 * A content router that knows no providers and asks nobody. Helia 7's routing turns to its
 * fallback routers (the one naming our gateway) only after every other router has finished,
 * and with no other router at all it never gets there: it merges zero router streams with a
 * queue that ends only on an 'idle' event a finishing router emits (helia/dist/src/routing.js),
 * so findProviders never yields and no request ever reaches the gateway. This router finishes
 * at once, so the fallback router is asked next.
 */
const noProviders = {
  name: 'no-providers',
  async * findProviders () {}
}

/** A started Helia node whose only source of blocks is our gateway. */
export async function lockedDownHelia () {
  const helia = withHTTP(createHeliaLight({ routers: [noProviders] }), {
    delegatedRouters: [],
    recursiveGateways: [gatewayUrl()],
    allowInsecure: true,
    allowLocal: true
  })
  await helia.start()
  return helia
}

/** An environment variable the runner must set. */
export function env (name) {
  const value = process.env[name]
  if (value == null || value === '') throw new Error(`${name} is not set`)
  return value
}

/** Throws unless `actual` equals `expected` (compared as JSON). */
export function assertEqual (actual, expected, what) {
  const a = JSON.stringify(actual)
  const e = JSON.stringify(expected)
  if (a !== e) throw new Error(`${what}: expected ${e}, got ${a}`)
}

/** Throws unless `condition` holds. */
export function assert (condition, what) {
  if (!condition) throw new Error(what)
}

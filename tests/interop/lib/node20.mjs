// Current Helia releases target Node 22; Node 20 lacks Promise.withResolvers. Imported before
// Helia by every interop check (tests/interop/lib/helia.mjs, tests/interop/p2p/lib.mjs).
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve
    let reject
    const promise = new Promise((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

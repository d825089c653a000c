// Runs interop checks, one module per check under checks/ (all of them, or those named on the
// command line), each in its own process so one check's Helia node cannot affect another.
// Exits non-zero if any check fails.
import { spawnSync } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const wanted = process.argv.slice(2)
const checks = readdirSync(join(here, 'checks'))
  .filter(f => f.endsWith('.mjs'))
  .filter(f => wanted.length === 0 || wanted.some(w => f.startsWith(w)))
  .sort()
if (checks.length === 0) {
  console.error(`no check matches ${wanted.join(' ')}`)
  process.exit(2)
}
let failed = 0
for (const check of checks) {
  const run = spawnSync(process.execPath, [join(here, 'checks', check)], {
    stdio: 'inherit',
    env: process.env,
    timeout: 120_000
  })
  const ok = run.status === 0
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${check}`)
  if (!ok) failed++
}
console.log(`${checks.length - failed} of ${checks.length} interop checks passed`)
process.exit(failed === 0 ? 0 : 1)

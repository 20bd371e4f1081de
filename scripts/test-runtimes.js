'use strict'
// `npm run test:runtimes`: the client/server smoke test (scripts/runtime-smoke.cjs) under
// Node, Bun and Deno, with the runtimes' Linux x64 binaries from the npm registry
// (`@oven/bun-linux-x64`, `@deno/linux-x64-glibc`), installed once into a cache directory
// (IMT_GATEWAY_RUNTIMES, default: the OS temp directory). Needs the addon built first
// (`npm run build`). Checks that each runtime gets the I/O driver meant for it: Node's own
// libuv loop under Node, tokio under Bun and Deno, whose libuv is not Node's.

const { spawnSync, execFileSync } = require('child_process')
const fs = require('fs')
const os = require('os')
const path = require('path')

const BUN = '@oven/bun-linux-x64@1'
const DENO = '@deno/linux-x64-glibc@2'
const dir = process.env.IMT_GATEWAY_RUNTIMES || path.join(os.tmpdir(), 'imt-gateway-runtimes')
const smoke = path.join(__dirname, 'runtime-smoke.cjs')

if (process.platform !== 'linux' || process.arch !== 'x64') {
  console.log(`test:runtimes: only on Linux x64 (this is ${process.platform}-${process.arch}); skipped`)
  process.exit(0)
}

const bun = path.join(dir, 'node_modules', '@oven', 'bun-linux-x64', 'bin', 'bun')
const deno = path.join(dir, 'node_modules', '@deno', 'linux-x64-glibc', 'deno')
if (!fs.existsSync(bun) || !fs.existsSync(deno)) {
  fs.mkdirSync(dir, { recursive: true })
  console.log(`installing ${BUN} and ${DENO} into ${dir}`)
  execFileSync('npm', ['install', '--no-audit', '--no-fund', '--no-save', '--no-package-lock', '--prefix', dir, BUN, DENO], { stdio: 'inherit' })
}

const runs = [
  ['node', process.execPath, [smoke], {}, 'libuv'],
  ['node (IMT_GATEWAY_IO=tokio)', process.execPath, [smoke], { IMT_GATEWAY_IO: 'tokio' }, 'tokio'],
  ['bun', bun, [smoke], {}, 'tokio'],
  ['deno', deno, ['run', '-A', smoke], { DENO_NO_UPDATE_CHECK: '1', NO_COLOR: '1' }, 'tokio']
]

let failed = 0
for (const [name, command, args, env, driver] of runs) {
  const started = Date.now()
  const version = spawnSync(command, ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0]
  const result = spawnSync(command, args, {
    cwd: path.join(__dirname, '..'),
    env: { ...process.env, ...env, DEBUG: '' },
    encoding: 'utf8',
    timeout: 60000
  })
  const out = `${result.stdout || ''}${result.stderr || ''}`.trim()
  const ok = result.status === 0 && new RegExp(`^ok \\S+ ${driver} `, 'm').test(out)
  if (!ok) failed++
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name} (${version}, ${Date.now() - started} ms): ${ok ? out.split('\n').find((l) => l.startsWith('ok ')) : `exit ${result.status} ${result.signal || ''}, expected driver ${driver}\n${out}`}`)
}
if (failed) {
  console.log(`test:runtimes: ${failed} of ${runs.length} failed`)
  process.exit(1)
}
console.log('test:runtimes: all passed')

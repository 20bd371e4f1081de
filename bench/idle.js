'use strict'
// Memory per idle client, alone and quickly: `clients` mutual-TLS clients connected in one
// process (bench/client.js, `kind: 'idle'`) against the bench's Server, both figures printed
// for each run:
//   bench   RSS growth / clients between two forced garbage collections (`npm run bench`'s row)
//   growth  RSS growth / clients from the process's start, no collection forced
//
//   node bench/idle.js [--clients N] [--runs R] [--pin CPU] [--lib A.node --lib B.node ...]
//
// With several `--lib` (addon binaries, as IMT_GATEWAY_NATIVE_LIBRARY takes them), the runs
// alternate between them, so a drift of the machine touches each alike. IMT_GATEWAY_IO=tokio
// measures the tokio driver.

const { execFile, fork } = require('child_process')
const path = require('path')
const { createPki } = require('imt-gateway/testing')

const arg = (name, fallback) => {
  const at = process.argv.indexOf(name)
  return at > 0 ? process.argv[at + 1] : fallback
}
const clients = Number(arg('--clients', 1000))
const runs = Number(arg('--runs', 3))
const pin = arg('--pin', null)
const libs = process.argv.flatMap((a, i) => process.argv[i - 1] === '--lib' ? [path.resolve(a)] : [])
const pinned = (args) => pin === null ? [process.execPath, args] : ['taskset', ['-c', pin, process.execPath, ...args]]

function server (pki) {
  const [execPath, execArgv] = pin === null ? [process.execPath, []] : ['taskset', ['-c', pin, process.execPath]]
  const child = fork(path.join(__dirname, 'server.js'), [], { execPath, execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  return new Promise((resolve) => {
    child.once('message', ({ port }) => resolve({ port, stop: () => child.send({ stop: true }) }))
    child.send({ start: { key: pki.server.key, cert: pki.server.cert, ca: pki.caCert } })
  })
}

function measure (scenario, lib) {
  const env = lib ? { ...process.env, IMT_GATEWAY_NATIVE_LIBRARY: lib } : process.env
  return new Promise((resolve, reject) => {
    execFile(...pinned(['--expose-gc', path.join(__dirname, 'client.js'), JSON.stringify(scenario)]),
      { cwd: path.join(__dirname, '..'), env, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
        if (err) return reject(new Error(stderr || err.message))
        resolve(JSON.parse(stdout))
      })
  })
}

async function main () {
  const pki = createPki({ hosts: ['localhost', '127.0.0.1'] })
  const gateway = await server(pki)
  const scenario = { kind: 'idle', clients, port: gateway.port, key: pki.client.key, cert: pki.client.cert, ca: pki.caCert }
  const results = new Map((libs.length ? libs : [null]).map((lib) => [lib, []]))
  for (let i = 0; i < runs; i++) {
    for (const [lib, list] of results) {
      const r = await measure(scenario, lib)
      list.push(r)
      console.log(`${lib ? path.basename(path.dirname(lib)) + '/' + path.basename(lib) : 'default'}: ${r.clients} clients, bench ${Math.round(r.bytesPerClient)} bytes, growth ${Math.round(r.rssGrowthPerClient)} bytes each`)
    }
  }
  for (const [lib, list] of results) {
    const median = (key) => list.map((r) => r[key]).sort((a, b) => a - b)[Math.floor(list.length / 2)]
    console.log(`median ${lib || 'default'}: bench ${Math.round(median('bytesPerClient'))}, growth ${Math.round(median('rssGrowthPerClient'))} bytes per client`)
  }
  gateway.stop()
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})

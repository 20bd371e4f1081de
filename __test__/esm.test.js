'use strict'
// The ES module face of the package: real .mjs files, in a project that has the package in its
// node_modules, run by a child node.

const test = require('ava')
const fs = require('fs')
const os = require('os')
const path = require('path')
const { execFile } = require('child_process')
const { scaled } = require('./helpers/time')

const root = path.join(__dirname, '..')

/** A throwaway project whose node_modules/imt-gateway is this package. */
function project (t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imt-gateway-esm-'))
  fs.mkdirSync(path.join(dir, 'node_modules'))
  fs.symlinkSync(root, path.join(dir, 'node_modules', 'imt-gateway'), 'dir')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

function run (dir, file, source) {
  fs.writeFileSync(path.join(dir, file), source)
  return new Promise((resolve) => {
    execFile(process.execPath, [file], { cwd: dir, timeout: scaled(20000), encoding: 'utf8' }, (err, stdout, stderr) => {
      resolve({ code: err ? err.code : 0, out: stdout, err: stderr })
    })
  })
}

test('named imports: a client and a server talk, and the classes are the CommonJS ones', async (t) => {
  const dir = project(t)
  const result = await run(dir, 'named.mjs', `
    import { Client, Event, Action, Server } from 'imt-gateway'
    import { createRequire } from 'node:module'
    const require = createRequire(import.meta.url)
    const cjs = require('imt-gateway')
    console.log([Client, Event, Action, Server].every((value, i) => value === [cjs.Client, cjs.Event, cjs.Action, cjs.Server][i]))
    const server = await new Server({ echo: true }).listenAsync(0, '127.0.0.1')
    const client = new Client({ host: 'localhost', port: server.address().port })
    const echoed = new Promise((resolve) => client.on('action', (action, ack) => { ack(); resolve(action) }))
    await client.connectAsync()
    const event = await client.sendAsync(new Event('reading', { n: 1 }))
    const action = await echoed
    console.log(event instanceof Event, action instanceof Action, action.type, JSON.stringify(action.parameters))
    await client.closeAsync()
    await server.closeAsync()
  `)
  t.is(result.code, 0, result.err)
  t.deepEqual(result.out.trim().split('\n'), ['true', 'true true reading {"n":1}'])
})

test('the default import is the CommonJS module', async (t) => {
  const dir = project(t)
  const result = await run(dir, 'default.mjs', `
    import gw from 'imt-gateway'
    import { createRequire } from 'node:module'
    const require = createRequire(import.meta.url)
    console.log(gw === require('imt-gateway'), Object.keys(gw).sort().join(','), typeof gw.Client)
  `)
  t.is(result.code, 0, result.err)
  t.is(result.out.trim(), 'true Action,Client,Event,Server function')
})

test('imt-gateway/testing: createPki makes certificates a mutual-TLS client and server accept', async (t) => {
  const dir = project(t)
  const result = await run(dir, 'testing.mjs', `
    import { createPki, TestCertificateAuthority, ioDriver } from 'imt-gateway/testing'
    import testing from 'imt-gateway/testing'
    import { Client, Server } from 'imt-gateway'
    const pki = createPki()
    console.log(testing.createPki === createPki, typeof TestCertificateAuthority, ioDriver())
    const server = await new Server({ key: pki.server.key, cert: pki.server.cert, ca: pki.caCert }).listenAsync(0, '127.0.0.1')
    const client = new Client({ host: '127.0.0.1', port: server.address().port, key: pki.client.key, cert: pki.client.cert, ca: pki.caCert })
    await client.connectAsync()
    console.log(server.connections()[0].subject)
    await client.closeAsync()
    await server.closeAsync()
  `)
  t.is(result.code, 0, result.err)
  const lines = result.out.trim().split('\n')
  t.regex(lines[0], /^true function (libuv|tokio)$/)
  t.regex(lines[1], /device-1/)
})

test('require() still loads the CommonJS entry points', async (t) => {
  const dir = project(t)
  const result = await run(dir, 'plain.cjs', `
    const { Client, Server } = require('imt-gateway')
    const { createPki } = require('imt-gateway/testing')
    console.log(typeof Client, typeof Server, typeof createPki, require('path').basename(require.resolve('imt-gateway')))
  `)
  t.is(result.code, 0, result.err)
  t.is(result.out.trim(), 'function function function index.js')
})

'use strict'
// Logging goes through the `debug` package under 2.x's namespaces, so every way applications
// use `debug` works: DEBUG in the environment, enable() at run time, debug.log redirected.

const test = require('ava')
const { runNode } = require('./helpers/child')

// A client that fails to connect (port 1) once, reconnects, then gives up: it logs its life
// and a recovered error under imt:gateway:client.
const lifecycle = `
const { Client } = require('imt-gateway')
const client = new Client({ host: 'localhost', port: 1, reconnectDelay: 10, maxReconnectAttempts: 1 })
client.on('error', (err) => { console.log('done', err.code) })
client.connect()
`

test('nothing is logged unless a namespace is enabled', async (t) => {
  const result = await runNode(lifecycle, { env: { DEBUG: '' } })
  t.is(result.code, 0)
  t.is(result.out.trim(), 'done ECONNREFUSED')
  t.is(result.err, '')
})

test('DEBUG in the environment enables the namespace', async (t) => {
  const result = await runNode(lifecycle, { env: { DEBUG: 'imt:gateway:*', DEBUG_COLORS: 'no' } })
  t.is(result.code, 0)
  t.regex(result.err, /imt:gateway:client connect to localhost:1/)
  t.regex(result.err, /imt:gateway:client recovered: .*\(ECONNREFUSED\)/)
})

test("require('debug').enable() after loading the package turns its logs on, and debug.log redirects them", async (t) => {
  const result = await runNode(`
const debug = require('debug')
require('imt-gateway')
debug.log = (...args) => console.log('routed:', require('util').format(...args))
debug.enable('imt:gateway:*')
${lifecycle}
`, { env: { DEBUG: '', DEBUG_COLORS: 'no' } })
  t.is(result.code, 0)
  t.is(result.err, '', 'nothing on stderr: debug.log took it')
  t.regex(result.out, /routed: .*imt:gateway:client connect to localhost:1/)
  t.regex(result.out, /routed: .*imt:gateway:client recovered: .*ECONNREFUSED/)
  t.regex(result.out, /done ECONNREFUSED/)
})

test("require('debug').disable() at run time turns them off again", async (t) => {
  const result = await runNode(`
const debug = require('debug')
debug.log = (...args) => console.log('routed:', require('util').format(...args))
require('imt-gateway')
debug.disable()
${lifecycle}
`, { env: { DEBUG: 'imt:gateway:*' } })
  t.is(result.code, 0)
  t.notRegex(result.out, /routed:/)
})

test('a caught panic is logged under imt:gateway:native when enabled at run time, and only then', async (t) => {
  const source = (enable) => `
const debug = require('debug')
const { Client } = require('imt-gateway')
debug.log = (...args) => console.log('routed:', require('util').format(...args))
${enable ? "debug.enable('imt:gateway:native')" : ''}
const client = new Client({ host: 'localhost', port: 1 })
client.on('error', (err) => { console.log('error', err.code); client.close() })
client.connect()
client._native.__crash()
`
  const env = { DEBUG: '', DEBUG_COLORS: 'no', IMT_GATEWAY_TEST_HOOKS: '1' }
  const told = await runNode(source(true), { env })
  t.is(told.code, 0, told.err)
  t.regex(told.out, /routed: .*imt:gateway:native [\s\S]*crash requested/)
  t.regex(told.out, /error EINTERNAL/)
  t.is(told.err, '')
  const quiet = await runNode(source(false), { env })
  t.is(quiet.out, 'error EINTERNAL\n')
  t.is(quiet.err, '')
})

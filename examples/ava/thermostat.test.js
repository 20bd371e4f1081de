'use strict'
// The thermostat against the bundled gateway, over mutual TLS with throwaway certificates from
// `imt-gateway/testing`: `npx ava` in this folder.
const test = require('ava')
const os = require('os')
const { Client, Server } = require('imt-gateway')
const { createPki } = require('imt-gateway/testing')
const { createThermostat } = require('./thermostat')

// The device names itself in HELLO with its host name: that is whom the server's actions go to.
const DEVICE = os.hostname()

test.beforeEach(async (t) => {
  const pki = createPki({ device: DEVICE })
  const events = []
  // onEvent runs before the server acknowledges each event: once report() has resolved, its
  // event is in `events`. (An `event` listener may run after the acknowledgement.)
  const server = new Server({ key: pki.server.key, cert: pki.server.cert, ca: pki.caCert, echo: false, onEvent: (event) => { events.push(event) } })
  await server.listenAsync(0, '127.0.0.1')
  const client = new Client({ host: '127.0.0.1', port: server.address().port, key: pki.client.key, cert: pki.client.cert, ca: pki.caCert })
  await client.connectAsync()
  t.context = { server, client, events }
})

test.afterEach.always(async (t) => {
  await t.context.client.closeAsync()
  await t.context.server.closeAsync()
})

test('reports readings the gateway receives and acknowledges', async (t) => {
  const thermostat = createThermostat(t.context.client, { target: 21 })
  await thermostat.report(19.5)
  await thermostat.report(20)
  t.deepEqual(t.context.events.map((event) => event.bundle), [{ celsius: 19.5, target: 21 }, { celsius: 20, target: 21 }])
  t.true(t.context.events.every((event) => event.type === 'temperature'))
})

test('takes a set-target action and acknowledges it', async (t) => {
  const thermostat = createThermostat(t.context.client)
  const acked = new Promise((resolve) => t.context.server.queueAction(DEVICE, { type: 'set-target', parameters: { celsius: 23 } }, resolve))
  t.is(await acked, null)
  t.is(thermostat.target, 23)
})

test('refuses a target out of range with ERANGE', async (t) => {
  const thermostat = createThermostat(t.context.client)
  const err = await new Promise((resolve) => t.context.server.queueAction(DEVICE, { type: 'set-target', parameters: { celsius: 99 } }, resolve))
  t.is(err.code, 'ERANGE')
  t.is(thermostat.target, 20)
})

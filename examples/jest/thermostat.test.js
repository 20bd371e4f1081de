'use strict'
// The thermostat against the bundled gateway, over mutual TLS with throwaway certificates from
// `imt-gateway/testing`: `npx jest` in this folder.
const { test, expect, beforeEach, afterEach } = require('@jest/globals')
const os = require('os')
const { Client, Server } = require('imt-gateway')
const { createPki } = require('imt-gateway/testing')
const { createThermostat } = require('./thermostat')

// The device names itself in HELLO with its host name: that is whom the server's actions go to.
const DEVICE = os.hostname()
let server, client, events

beforeEach(async () => {
  const pki = createPki({ device: DEVICE })
  events = []
  // onEvent runs before the server acknowledges each event: once report() has resolved, its
  // event is in `events`. (An `event` listener may run after the acknowledgement.)
  server = new Server({ key: pki.server.key, cert: pki.server.cert, ca: pki.caCert, echo: false, onEvent: (event) => { events.push(event) } })
  await server.listenAsync(0, '127.0.0.1')
  client = new Client({ host: '127.0.0.1', port: server.address().port, key: pki.client.key, cert: pki.client.cert, ca: pki.caCert })
  await client.connectAsync()
})

afterEach(async () => {
  await client.closeAsync()
  await server.closeAsync()
})

test('reports readings the gateway receives and acknowledges', async () => {
  const thermostat = createThermostat(client, { target: 21 })
  await thermostat.report(19.5)
  await thermostat.report(20)
  expect(events.map((event) => event.bundle)).toEqual([{ celsius: 19.5, target: 21 }, { celsius: 20, target: 21 }])
  expect(events.every((event) => event.type === 'temperature')).toBe(true)
})

test('takes a set-target action and acknowledges it', async () => {
  const thermostat = createThermostat(client)
  const err = await new Promise((resolve) => server.queueAction(DEVICE, { type: 'set-target', parameters: { celsius: 23 } }, resolve))
  expect(err).toBeNull()
  expect(thermostat.target).toBe(23)
})

test('refuses a target out of range with ERANGE', async () => {
  const thermostat = createThermostat(client)
  const err = await new Promise((resolve) => server.queueAction(DEVICE, { type: 'set-target', parameters: { celsius: 99 } }, resolve))
  expect(err.code).toBe('ERANGE')
  expect(thermostat.target).toBe(20)
})

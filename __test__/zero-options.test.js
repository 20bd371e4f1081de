'use strict'
// The options table (docs/client.md): 0 means none or unlimited for `connectTimeout`, `maxQueueSize` and
// `maxReconnectAttempts`, not "at once" and not the default. Each is checked beside the same
// option set to a small number, which must bite.

const test = require('ava')
const { Client, Event } = require('imt-gateway')
const { optionDefaults } = require('../lib/native')
const { fakeGateway } = require('./helpers/fake-gateway')
const { freePort, once, waitFor } = require('./helpers/server')
const { scaled } = require('./helpers/time')

const DEFAULTS = optionDefaults().client
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

function client (t, options) {
  const c = new Client({ host: 'localhost', ...options })
  const errors = []
  c.on('error', (err) => errors.push(err.code))
  t.teardown(() => c.close())
  return { client: c, errors }
}

test('connectTimeout: 0 waits for WELCOME longer than the default timeout; a small one gives up', async (t) => {
  const silent = await fakeGateway(t)
  const patient = client(t, { port: silent.port, connectTimeout: 0, autoReconnect: false })
  patient.client.connect()
  const peer = await silent.accept()
  t.is((await peer.next()).name, 'HELLO')

  const other = await fakeGateway(t)
  const hasty = client(t, { port: other.port, connectTimeout: scaled(200), autoReconnect: false })
  hasty.client.connect()
  await waitFor(() => hasty.errors.length > 0)
  t.deepEqual(hasty.errors, ['ETIMEDOUT'], 'a small connectTimeout gives up')

  // Past the default: 0 is not the default either. (Not scaled: the default is not.)
  await sleep(DEFAULTS.connectTimeout + 1000)
  t.deepEqual(patient.errors, [])
  t.false(peer.ended, 'the connection is still open')
  t.deepEqual(patient.client.recovered, {})
  const drained = once(patient.client, 'drained')
  peer.send('WELCOME')
  peer.send('DRAINED')
  await drained
  t.true(patient.client.stats().connected)
})

test('maxQueueSize: 0 queues more events than the default bound; a small one refuses with EQUEUEFULL', async (t) => {
  const small = client(t, { port: 1, maxQueueSize: 2 })
  const refused = []
  for (let i = 0; i < 3; i++) small.client.send(new Event('e', { i }), (err) => refused.push(err && err.code))
  await waitFor(() => refused.length > 0)
  t.deepEqual(refused, ['EQUEUEFULL'])

  const { client: unbounded } = client(t, { port: 1, maxQueueSize: 0 })
  const n = DEFAULTS.maxQueueSize + 1
  const outcomes = []
  const event = new Event('e')
  for (let i = 0; i < n; i++) unbounded.send(event, (err) => outcomes.push(err && err.code))
  await sleep(50)
  t.deepEqual(outcomes, [], 'no send() was refused')
  t.is(unbounded.stats().queued, n)
  t.is(unbounded.stats().failedQueueFull, 0)
  unbounded.close()
  await waitFor(() => outcomes.length === n)
  t.true(outcomes.every((code) => code === 'ECLOSED'), 'each queued event was kept until close()')
})

test('maxReconnectAttempts: 0 keeps reconnecting; a small one gives up with the last error', async (t) => {
  const port = await freePort()
  const limited = client(t, { port, maxReconnectAttempts: 3, reconnectDelay: 5 })
  limited.client.connect()
  await waitFor(() => limited.errors.length > 0)
  t.deepEqual(limited.errors, ['ECONNREFUSED'])

  const endless = client(t, { port, maxReconnectAttempts: 0, reconnectDelay: 5 })
  let reconnects = 0
  endless.client.on('reconnect', () => { reconnects++ })
  endless.client.connect()
  await waitFor(() => reconnects >= 40)
  t.deepEqual(endless.errors, [])
  t.true(endless.client.recovered.ECONNREFUSED >= 40, JSON.stringify(endless.client.recovered))
})

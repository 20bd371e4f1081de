'use strict'
// When the client emits 'error' is part of the API: code written for 2.x usually has no
// 'error' listener, and an 'error' with no listener throws. 2.0.8 emits it only for a BYE with
// an error, a wrong acknowledgement, the error that ended the connection when it does not
// reconnect, and the last error when maxReconnectAttempts runs out before any connection.
// Everything it recovers from by itself stays quiet (logged under DEBUG, counted).

const test = require('ava')
const fs = require('fs')
const path = require('path')
const { Client, Event } = require('imt-gateway')
const { fakeGateway, welcome } = require('./helpers/fake-gateway')
const { once, waitFor } = require('./helpers/server')
const { startNode } = require('./helpers/child')

const settle = (ms = 150) => new Promise((resolve) => setTimeout(resolve, ms))

/** The README's quick example, pointed at `port`, with a short reconnect delay. */
function readmeExample (port) {
  const readme = fs.readFileSync(path.join(__dirname, '..', 'README.md'), 'utf8')
  const section = readme.slice(readme.indexOf('## Quick example'))
  const example = /```js\n([\s\S]*?)```/.exec(section)[1]
  if (!example.includes("new Client({ host: 'localhost' })")) throw new Error('README example changed')
  return example.replace("new Client({ host: 'localhost' })", `new Client({ host: 'localhost', port: ${port}, reconnectDelay: 50 })`)
}

/** Reads the EVENT the example sends after each DRAINED and acknowledges it. */
async function ackEvent (peer) {
  const event = await peer.next()
  if (event.name !== 'EVENT') throw new Error(`expected EVENT, got ${event.name}`)
  peer.send('ACKNOWLEDGEMENT', { correlid: event.body.id, status: 0 })
  return event
}

const misbehaviours = [
  ['an undecodable body', (peer) => peer.sendRaw(Buffer.from([5, 0, 1, 0, 0, 0, 0xc1])), true],
  ['a body of the wrong shape', (peer) => peer.send('ACTION', 'not a map'), true],
  ['an oversize header', (peer) => peer.sendRaw(Buffer.from([5, 0, 0xff, 0xff, 0xff, 0xff])), true],
  ['an unknown token', (peer) => peer.sendRaw(Buffer.from([0x09, 0, 1, 0, 0, 0, 0xc0])), false],
  ['a second WELCOME', (peer) => peer.send('WELCOME'), false],
  ['a HELLO', (peer) => peer.send('HELLO', { metadata: { device_name: 'server' } }), false],
  ['an EVENT', (peer) => peer.send('EVENT', { id: 'x', type: 't', bundle: null }), false]
]

for (const [name, misbehave, ends] of misbehaviours) {
  test(`the README example, with no 'error' listener, survives ${name}`, async (t) => {
    const gateway = await fakeGateway(t)
    let marker = 0
    const { child, ended } = startNode(readmeExample(gateway.port), { timeout: 15000 })
    t.teardown(() => child.kill('SIGKILL'))
    let peer = await gateway.accept()
    await welcome(peer)
    await ackEvent(peer)
    misbehave(peer)
    if (ends) {
      await peer.closed
      peer = await gateway.accept()
      await welcome(peer)
      await ackEvent(peer)
    }
    // The connection (the first or the new one) still serves actions.
    peer.send('ACTION', { id: ++marker, type: 'probe', parameters: null })
    const ack = await peer.next()
    t.is(ack.name, 'ACKNOWLEDGEMENT')
    t.is(ack.body.correlid, marker)
    await settle()
    child.kill('SIGTERM')
    const result = await ended
    t.is(result.signal, 'SIGTERM', `the child ended by itself: ${result.err}`)
    t.is(result.err, '')
    t.is(result.out.match(/event acknowledged/g).length, ends ? 2 : 1)
  })
}

/** A client against a scripted gateway, recording what it emits. */
async function againstFake (t, options = {}) {
  const gateway = await fakeGateway(t)
  const client = new Client({ host: 'localhost', port: gateway.port, reconnectDelay: 50, ...options })
  const log = []
  for (const name of ['connect', 'drain', 'reconnect', 'disconnect']) client.on(name, () => log.push(name))
  client.on('error', (err) => log.push(`error:${err.code}`))
  t.teardown(() => client.close())
  client.connect()
  return { gateway, client, log }
}

test('recovered errors are counted by code, and not emitted', async (t) => {
  const { gateway, client, log } = await againstFake(t, { ackTimeout: 200 })
  let peer = await gateway.accept()
  await welcome(peer)
  await once(client, 'drain')
  peer.sendRaw(Buffer.from([0x09, 0, 0, 0, 0, 0]))
  peer.send('WELCOME')
  peer.sendRaw(Buffer.from([5, 0, 1, 0, 0, 0, 0xc1]))
  await peer.closed
  peer = await gateway.accept()
  await welcome(peer)
  await once(client, 'drain')
  // Never acknowledged: ackTimeout replaces the connection.
  client.send(new Event('t'))
  await peer.closed
  peer = await gateway.accept()
  await welcome(peer)
  const event = await peer.next()
  peer.send('ACKNOWLEDGEMENT', { correlid: event.body.id, status: 0 })
  await waitFor(() => client.recovered.ETIMEDOUT === 1)
  t.deepEqual(client.recovered, { EPROTO: 3, ETIMEDOUT: 1 })
  t.false(log.some((entry) => entry.startsWith('error:')), log.join())
})

test('a BYE with an error and a wrong acknowledgement still emit error, while reconnecting', async (t) => {
  const { gateway, client, log } = await againstFake(t)
  let peer = await gateway.accept()
  await welcome(peer)
  await once(client, 'drain')
  peer.send('BYE', { error: { code: 'IM403', message: 'Device is disabled.' } })
  const [bye] = await once(client, 'error')
  t.is(bye.code, 'IM403')
  peer = await gateway.accept()
  await welcome(peer)
  client.send(new Event('t'))
  t.is((await peer.next()).name, 'EVENT')
  peer.send('ACKNOWLEDGEMENT', { correlid: 'someone else', status: 0 })
  const [wrong] = await once(client, 'error')
  t.is(wrong.code, 'EPROTO')
  t.is(wrong.message, 'Received acknowledgement for different event.')
  await peer.closed
  await gateway.accept()
  await settle()
  t.deepEqual(log.filter((entry) => entry.startsWith('error:')), ['error:IM403', 'error:EPROTO'])
  t.deepEqual(client.recovered, {})
})

test('without autoReconnect, the error that ended the connection is emitted', async (t) => {
  const { gateway, client, log } = await againstFake(t, { autoReconnect: false })
  const peer = await gateway.accept()
  await welcome(peer)
  await once(client, 'drain')
  peer.sendRaw(Buffer.from([0x09, 0, 0, 0, 0, 0]))
  peer.sendRaw(Buffer.from([5, 0, 1, 0, 0, 0, 0xc1]))
  const [err] = await once(client, 'error')
  t.is(err.code, 'EPROTO')
  t.regex(err.message, /^Failed to deserialize packet\./)
  await settle()
  t.deepEqual(log, ['connect', 'drain', 'error:EPROTO', 'disconnect'])
  t.deepEqual(client.recovered, { EPROTO: 1 }, 'the unknown token only')
})

test('socket errors while reconnecting are quiet; running out of attempts before connecting emits the last', async (t) => {
  const client = new Client({ host: 'localhost', port: 1, reconnectDelay: 20, maxReconnectAttempts: 3 })
  const errors = []
  client.on('error', (err) => errors.push(err.code))
  client.connect()
  await waitFor(() => errors.length === 1)
  await settle()
  t.deepEqual(errors, ['ECONNREFUSED'])
  t.deepEqual(client.recovered, { ECONNREFUSED: 3 })
})

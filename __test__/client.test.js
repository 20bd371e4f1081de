'use strict'
// The Client against the bundled Server (and, for what that server never does, a scripted
// gateway), over plain TCP and over mutual TLS: every row of docs/PROTOCOL.md section 6.1
// (What the application hears).

const test = require('ava')
const crypto = require('crypto')
const { Client, Event, Action } = require('imt-gateway')
const { createPki } = require('imt-gateway/testing')
const { start, startTls, once, waitFor } = require('./helpers/server')
const { fakeGateway, welcome } = require('./helpers/fake-gateway')
const { scaled } = require('./helpers/time')

const NAMES = ['connect', 'drain', 'drained', 'reconnect', 'disconnect', 'error']

/** Each transport: a bundled Server and the Client options that reach it. */
const transports = {
  tcp: async (t, serverOptions) => {
    const server = await start(t, serverOptions)
    return { server, options: { host: 'localhost', port: server.address().port } }
  },
  mtls: async (t, serverOptions) => {
    const { server, pki } = await startTls(t, serverOptions)
    return { server, pki, options: tlsOptions(pki, server.address().port) }
  }
}

function tlsOptions (pki, port) {
  return { host: '127.0.0.1', port, key: pki.client.key, cert: pki.client.cert, ca: pki.caCert }
}

/** A random (version 4) UUID without its dashes: the form of the event ids a client makes. */
const UUID_V4 = /^[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}$/

/** A gateway address nothing listens on. */
async function closedPort () {
  const net = require('net')
  const probe = net.createServer()
  await new Promise((resolve) => probe.listen(0, '127.0.0.1', resolve))
  const { port } = probe.address()
  await new Promise((resolve) => probe.close(resolve))
  return port
}

/** A client closed after the test, with a log of its lifecycle events in order. */
function track (t, options) {
  const client = new Client(options)
  const log = []
  for (const name of NAMES) {
    client.on(name, (err) => log.push(name === 'error' ? `error:${err.code}` : name))
  }
  t.teardown(() => client.close())
  return { client, log }
}

/** Acknowledges every action (the bundled Server echoes each event as one). */
function ackAll (client, into = []) {
  client.on('action', (action, ack) => { into.push(action); ack() })
  return into
}

function sendAsync (client, event) {
  return new Promise((resolve) => client.send(event, resolve))
}

for (const [transport, setUp] of Object.entries(transports)) {
  test(`${transport}: connect once, drain twice, reconnect once, disconnect once across a kick`, async (t) => {
    const { server, options } = await setUp(t)
    const { client, log } = track(t, options)
    let reconnectedAt = null
    client.on('reconnect', () => { reconnectedAt = Date.now() })
    client.connect()
    await once(client, 'drain')
    const kicked = Date.now()
    server.kick()
    // The reconnect and the second drain may reach JavaScript in one batch.
    await waitFor(() => log.filter((name) => name === 'drain').length === 2)
    const delay = reconnectedAt - kicked
    client.close()
    await once(client, 'disconnect')
    t.deepEqual(log, ['connect', 'drain', 'drained', 'reconnect', 'drain', 'drained', 'disconnect'])
    t.true(delay >= 900, `the reconnect came ${delay} ms after the kick, expected about 1 s`)
  })

  test(`${transport}: ten events sent at once are acknowledged and echoed back in order`, async (t) => {
    const { server, options } = await setUp(t)
    const { client } = track(t, options)
    const actions = ackAll(client)
    const order = []
    client.on('acknowledgement', (ack) => order.push(`ack:${ack.correlid}`))
    const received = []
    server.on('event', (event) => received.push(event.id))
    const events = Array.from({ length: 10 }, (_, i) => new Event('reading', { n: i, at: new Date(1e12 + i) }))
    const results = events.map((event) => new Promise((resolve) => client.send(event, (err) => {
      order.push(`callback:${event.id}`)
      resolve(err)
    })))
    client.connect()
    t.deepEqual(await Promise.all(results), Array(10).fill(null))
    // The server's own notices and the client's reach JavaScript independently.
    await waitFor(() => actions.length === 10 && received.length === 10)
    const ids = events.map((e) => e.id)
    t.true(ids.every((id) => UUID_V4.test(id)), 'ids are random UUIDs without dashes')
    t.deepEqual(received, ids)
    t.deepEqual(order, ids.flatMap((id) => [`ack:${id}`, `callback:${id}`]))
    t.deepEqual(actions.map((a) => a.parameters.n), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    t.true(actions.every((a) => a instanceof Action && a.type === 'reading'))
    t.is(actions[3].parameters.at.getTime(), 1e12 + 3)
  })

  test(`${transport}: with maxInFlight, thousands of events in flight keep their callbacks in send order`, async (t) => {
    const { options } = await setUp(t)
    const { client } = track(t, { ...options, maxInFlight: 500 })
    const actions = ackAll(client)
    const acknowledged = []
    client.on('acknowledgement', (ack) => acknowledged.push(ack.correlid))
    const count = 3000
    const events = Array.from({ length: count }, (_, i) => new Event('reading', { n: i }))
    const called = []
    const results = events.map((event, i) => new Promise((resolve) => client.send(event, (err) => {
      called.push(i)
      resolve(err)
    })))
    client.connect()
    t.deepEqual(await Promise.all(results), Array(count).fill(null))
    await waitFor(() => actions.length === count)
    t.deepEqual(called, events.map((_, i) => i), 'each callback once, in send order')
    t.deepEqual(acknowledged, events.map((e) => e.id))
    t.deepEqual(actions.map((a) => a.parameters.n), events.map((_, i) => i))
  })

  test(`${transport}: maxInFlight: 3 has three events unacknowledged at once, acknowledged in any order`, async (t) => {
    const pki = transport === 'mtls' ? createPki() : null
    const gateway = await fakeGateway(t, { pki })
    const base = pki ? tlsOptions(pki, gateway.port) : { host: 'localhost', port: gateway.port }
    const { client } = track(t, { ...base, maxInFlight: 3 })
    const acks = []
    client.on('acknowledgement', (ack) => acks.push(ack))
    const events = Array.from({ length: 5 }, (_, i) => new Event('reading', { n: i }))
    const called = []
    const results = events.map((event, i) => new Promise((resolve) => client.send(event, (err) => {
      called.push(i)
      resolve(err)
    })))
    client.connect()
    const peer = await gateway.accept()
    await welcome(peer)
    const first = [await peer.next(), await peer.next(), await peer.next()]
    t.deepEqual(first.map((m) => m.body.id), events.slice(0, 3).map((e) => e.id))
    // The second is acknowledged first: its callback still waits for the first's.
    peer.send('ACKNOWLEDGEMENT', { correlid: events[1].id, status: 0 })
    peer.send('ACKNOWLEDGEMENT', { correlid: events[0].id, status: 0 })
    const next = [await peer.next(), await peer.next()]
    t.deepEqual(next.map((m) => m.body.id), events.slice(3).map((e) => e.id))
    peer.send('ACKNOWLEDGEMENT', { correlid: events[2].id, status: 0 })
    peer.send('ACKNOWLEDGEMENT', { correlid: events[4].id, status: 1, error: { message: 'No room.' } })
    peer.send('ACKNOWLEDGEMENT', { correlid: events[3].id, status: 0 })
    const outcomes = await Promise.all(results)
    t.deepEqual(outcomes.slice(0, 4), Array(4).fill(null))
    t.is(outcomes[4].message, 'No room.')
    t.is(outcomes[4].code, 'EACK')
    t.deepEqual(called, [0, 1, 2, 3, 4])
    // Acknowledgements are reported as they arrive; an error without a code has none.
    t.deepEqual(acks.map((a) => a.correlid), [1, 0, 2, 4, 3].map((i) => events[i].id))
    t.deepEqual(acks[3], { correlid: events[4].id, status: 1, error: { message: 'No room.' } })
  })

  test(`${transport}: actions held for the device arrive before drain and are acknowledged`, async (t) => {
    const { server, options } = await setUp(t)
    const { client, log } = track(t, options)
    const deviceName = require('os').hostname()
    const outcomes = []
    server.queueAction(deviceName, { id: 'a1', type: 'display', parameters: { text: 'hi' } }, (err) => outcomes.push(err))
    server.queueAction(deviceName, { id: 'a2', type: 'reboot' }, (err) => outcomes.push(err))
    client.on('action', (action, ack) => {
      log.push(`action:${action.id}`)
      if (action.id === 'a2') ack(Object.assign(new Error('Not now.'), { code: 'EBUSY' }))
      else ack()
    })
    client.connect()
    await once(client, 'drain')
    await waitFor(() => outcomes.length === 2)
    t.deepEqual(log.slice(0, 4), ['connect', 'action:a1', 'action:a2', 'drain'])
    t.is(outcomes[0], null)
    t.is(outcomes[1].message, 'Not now.')
    t.is(outcomes[1].code, 'EBUSY')
  })

  test(`${transport}: maxReconnectAttempts used up before any connection emits the last error`, async (t) => {
    const pki = transport === 'mtls' ? createPki() : null
    const port = await closedPort()
    const base = pki ? tlsOptions(pki, port) : { host: 'localhost', port }
    const { client, log } = track(t, { ...base, maxReconnectAttempts: 2, reconnectDelay: 20 })
    const failed = once(client, 'error')
    client.connect()
    const [err] = await failed
    t.is(err.code, 'ECONNREFUSED')
    t.regex(err.message, /ECONNREFUSED/)
    await new Promise((resolve) => setTimeout(resolve, 100))
    t.deepEqual(log, ['reconnect', 'reconnect', 'error:ECONNREFUSED'])
  })

  test(`${transport}: maxReconnectAttempts used up after a connection emits disconnect, not error`, async (t) => {
    const { server, options } = await setUp(t)
    const { client, log } = track(t, { ...options, maxReconnectAttempts: 2, reconnectDelay: 20 })
    client.connect()
    await once(client, 'drain')
    const disconnected = once(client, 'disconnect')
    server.destroy()
    await disconnected
    await new Promise((resolve) => setTimeout(resolve, 100))
    t.deepEqual(log, ['connect', 'drain', 'drained', 'reconnect', 'reconnect', 'disconnect'])
  })

  test(`${transport}: without autoReconnect a connection error is emitted`, async (t) => {
    const pki = transport === 'mtls' ? createPki() : null
    const port = await closedPort()
    const base = pki ? tlsOptions(pki, port) : { host: 'localhost', port }
    const { client, log } = track(t, { ...base, autoReconnect: false })
    client.connect()
    const [err] = await once(client, 'error')
    t.true(err instanceof Error)
    t.is(err.code, 'ECONNREFUSED')
    await new Promise((resolve) => setTimeout(resolve, 50))
    t.deepEqual(log, ['error:ECONNREFUSED'])
  })

  test(`${transport}: a BYE with an error is emitted with the server's code and message`, async (t) => {
    const pki = transport === 'mtls' ? createPki() : null
    const gateway = await fakeGateway(t, { pki })
    const base = pki ? tlsOptions(pki, gateway.port) : { host: 'localhost', port: gateway.port }
    const { client, log } = track(t, { ...base, autoReconnect: false })
    client.connect()
    const peer = await gateway.accept()
    const hello = await welcome(peer)
    t.is(hello.body.metadata.device_name, require('os').hostname())
    await once(client, 'drain')
    const failed = once(client, 'error')
    const disconnected = once(client, 'disconnect')
    peer.send('BYE', { error: { code: 'IM403', message: 'Device is disabled.' } })
    const [err] = await failed
    t.is(err.message, 'Device is disabled.')
    t.is(err.code, 'IM403')
    await disconnected
    t.deepEqual(log, ['connect', 'drain', 'drained', 'error:IM403', 'disconnect'])
  })

  test(`${transport}: an acknowledgement for the wrong event is a protocol error; the event is re-sent with its id`, async (t) => {
    const pki = transport === 'mtls' ? createPki() : null
    const gateway = await fakeGateway(t, { pki })
    const base = pki ? tlsOptions(pki, gateway.port) : { host: 'localhost', port: gateway.port }
    const { client, log } = track(t, { ...base, reconnectDelay: 20 })
    const errors = []
    client.on('error', (err) => errors.push(err))
    const event = new Event('reading', { n: 1 })
    const done = sendAsync(client, event)
    client.connect()
    const first = await gateway.accept()
    await welcome(first)
    const sent = await first.next()
    t.is(sent.name, 'EVENT')
    t.is(sent.body.id, event.id)
    first.send('ACKNOWLEDGEMENT', { correlid: 'some-other-event', status: 0 })
    const second = await gateway.accept()
    await welcome(second)
    const again = await second.next()
    t.deepEqual(again.body, sent.body, 'the same event, id and all, after the reconnect')
    second.send('ACKNOWLEDGEMENT', { correlid: event.id, status: 0 })
    t.is(await done, null)
    second.send('ACKNOWLEDGEMENT', { correlid: event.id, status: 0 })
    await waitFor(() => errors.length === 2)
    t.deepEqual(errors.map((e) => [e.code, e.message]), [
      ['EPROTO', 'Received acknowledgement for different event.'],
      ['EPROTO', 'Received acknowledgement even if there is no event in the queue.']
    ])
    t.deepEqual(log.slice(0, 5), ['connect', 'drain', 'drained', 'error:EPROTO', 'reconnect'])
  })

  test(`${transport}: a rejected event fails its callback with the server's code`, async (t) => {
    const { options } = await setUp(t, {
      onEvent: (event) => event.bundle.ok ? undefined : { code: 'IM400', message: 'Bad reading.' }
    })
    const { client } = track(t, options)
    ackAll(client)
    const acks = []
    client.on('acknowledgement', (ack) => acks.push(ack))
    client.connect()
    const rejected = await sendAsync(client, new Event('reading', { ok: false }))
    const accepted = await sendAsync(client, new Event('reading', { ok: true }))
    t.is(rejected.message, 'Bad reading.')
    t.is(rejected.code, 'IM400')
    t.is(accepted, null)
    t.is(acks[0].status, 1)
    t.deepEqual(acks[0].error, { code: 'IM400', message: 'Bad reading.' })
    t.is(acks[1].status, 0)
  })

  test(`${transport}: close() fails queued callbacks with ECLOSED, or keeps them when asked`, async (t) => {
    const pki = transport === 'mtls' ? createPki() : null
    const gateway = await fakeGateway(t, { pki })
    const base = pki ? tlsOptions(pki, gateway.port) : { host: 'localhost', port: gateway.port }
    const { client, log } = track(t, base)
    const outcomes = []
    const events = [1, 2, 3].map((n) => new Event('reading', { n }))
    for (const event of events) client.send(event, (err) => outcomes.push([event.bundle.n, err && err.code]))
    client.connect()
    const peer = await gateway.accept()
    await welcome(peer)
    t.is((await peer.next()).name, 'EVENT') // in flight, never acknowledged
    client.close()
    await once(client, 'disconnect')
    t.deepEqual(outcomes, [[1, 'ECLOSED'], [2, 'ECLOSED'], [3, 'ECLOSED']])

    // keepQueue: the events wait for the next connect() and then go out.
    const kept = []
    client.send(new Event('later'), (err) => kept.push(err))
    client.close({ keepQueue: true })
    t.deepEqual(kept, [])
    client.connect()
    const next = await gateway.accept()
    await welcome(next)
    const later = await next.next()
    t.is(later.body.type, 'later')
    next.send('ACKNOWLEDGEMENT', { correlid: later.body.id, status: 0 })
    await waitFor(() => kept.length === 1)
    t.deepEqual(kept, [null])
    t.deepEqual(log, ['connect', 'drain', 'drained', 'disconnect', 'connect', 'drain', 'drained'])
  })

  test(`${transport}: close() during the reconnect wait stops reconnecting`, async (t) => {
    const { server, options } = await setUp(t)
    // A long delay, so that a loaded machine cannot let it run out before close().
    const { client, log } = track(t, { ...options, reconnectDelay: scaled(2000) })
    client.connect()
    await once(client, 'drain')
    server.kick()
    await waitFor(() => server.connections().length === 0)
    await new Promise((resolve) => setTimeout(resolve, 100))
    client.close()
    await new Promise((resolve) => setTimeout(resolve, scaled(2300)))
    t.deepEqual(log, ['connect', 'drain', 'drained', 'disconnect'])
  })

  test(`${transport}: an event over 10 MiB fails its own send() with IM491; the connection carries on`, async (t) => {
    const { options } = await setUp(t)
    const { client, log } = track(t, { ...options, autoReconnect: false })
    ackAll(client)
    client.connect()
    await once(client, 'drain')
    const err = await sendAsync(client, new Event('blob', { data: Buffer.alloc(10 * 1024 * 1024) }))
    t.is(err.code, 'IM491')
    t.is(err.message, 'Maximum buffer size exceeded.')
    t.is(await sendAsync(client, new Event('small', { n: 1 })), null)
    t.deepEqual(log, ['connect', 'drain', 'drained'])
  })
}

test('event ids made by send() are random UUIDs without dashes, all different, and an id given is kept', (t) => {
  const client = new Client({ host: 'localhost', port: 1 })
  const events = Array.from({ length: 1000 }, (_, i) => new Event('reading', { n: i }))
  for (const event of events) client.send(event, () => {})
  const given = new Event('reading', null, 'my-own-id')
  client.send(given, () => {})
  client.close()
  const ids = events.map((event) => event.id)
  t.true(ids.every((id) => UUID_V4.test(id)))
  t.is(new Set(ids).size, ids.length)
  t.is(given.id, 'my-own-id')
})

test('acknowledgement reaches listeners however and whenever they are added, and again after all were removed', async (t) => {
  const { options } = await transports.tcp(t)
  const { client } = track(t, options)
  client.connect()
  await once(client, 'drain')
  const send = async () => {
    const event = new Event('reading', { n: 1 })
    t.is(await sendAsync(client, event), null)
    return event.id
  }
  // None listens: the events are acknowledged all the same.
  await send()
  const heard = []
  client.once('acknowledgement', (ack) => heard.push(['once', ack.correlid]))
  client.prependListener('acknowledgement', (ack) => heard.push(['prepended', ack.correlid]))
  const first = await send()
  t.deepEqual(heard, [['prepended', first], ['once', first]])
  client.removeAllListeners()
  await send()
  await send()
  t.is(heard.length, 2, 'nothing heard while none listens')
  client.addListener('acknowledgement', (ack) => heard.push(['added', ack.correlid, ack.status]))
  const later = await send()
  t.deepEqual(heard.slice(2), [['added', later, 0]])
  t.true(UUID_V4.test(later))
})

test('an event refused at send() has an id all the same', (t) => {
  const client = new Client({ host: 'localhost', port: 1 })
  t.teardown(() => client.close())
  const queued = new Event('reading', { n: 1 })
  client.send(queued, () => {})
  const unwritable = new Event('reading', { n: 2n })
  t.throws(() => client.send(unwritable), { code: 'EINVALIDBUNDLE' })
  const throwing = new Event('reading', { get n () { throw new Error('no reading') } })
  t.throws(() => client.send(throwing), { code: 'EINVALIDBUNDLE', message: /no reading/ })
  const ids = [queued.id, unwritable.id, throwing.id]
  t.true(ids.every((id) => UUID_V4.test(id)), ids.join())
  t.is(new Set(ids).size, 3)
})

test('validation: constructor options', (t) => {
  const pki = createPki()
  t.throws(() => new Client(), { instanceOf: Error, message: 'Options expected.' })
  t.throws(() => new Client('localhost'), { message: 'Options expected.' })
  t.throws(() => new Client({}), { message: 'Invalid private key.' })
  t.throws(() => new Client({ key: 'not a key', cert: pki.client.cert }), { message: 'Invalid private key.' })
  t.throws(() => new Client({ key: pki.client.key }), { message: 'Invalid certificate.' })
  t.throws(() => new Client({ key: pki.client.key, cert: pki.client.key }), { message: 'Invalid certificate.' })
  t.throws(() => new Client({ key: pki.server.key, cert: pki.client.cert }), { code: 'EKEYMISMATCH' })
  t.notThrows(() => new Client({ host: 'localhost' }))
  t.notThrows(() => new Client({ key: Buffer.from(pki.client.key), cert: Buffer.from(pki.client.cert) }))
})

test('validation: send() checks the callback first, then the event, in the original order', async (t) => {
  const client = new Client({ host: 'localhost', port: await closedPort() })
  t.throws(() => client.send(new Event('x'), 'nope'), { instanceOf: Error, message: 'Invalid callback.' })
  t.throws(() => client.send({ type: 'x' }, 42), { message: 'Invalid callback.' })

  const cases = [
    [{ type: 'x' }, TypeError, 'Event expected.'],
    [new Event(42), Error, 'Invalid event type.'],
    [new Event(), Error, 'Invalid event type.'],
    [new Event(''), Error, 'Event type not specified.'],
    [new Event('x', 'text'), Error, 'Invalid event bundle.'],
    [new Event('x', 7), Error, 'Invalid event bundle.']
  ]
  for (const [event, type, message] of cases) {
    t.throws(() => client.send(event), { instanceOf: type, message }, `thrown without a callback: ${message}`)
    const err = await new Promise((resolve) => client.send(event, resolve))
    t.true(err instanceof type, message)
    t.is(err.message, message)
  }
  // Reported asynchronously through the callback, never synchronously.
  let called = false
  client.send(new Event(''), () => { called = true })
  t.false(called)
  await new Promise((resolve) => setImmediate(resolve))
  t.true(called)
  // Valid bundles: objects, arrays, null and undefined.
  t.notThrows(() => client.send(new Event('x', null)))
  t.notThrows(() => client.send(new Event('x', [1, 2])))
  client.close()
})

test('keys and trust anchors in every accepted form connect over mutual TLS', async (t) => {
  for (const keyType of ['ec', 'rsa']) {
    const { server, pki } = await startTls(t, {}, { keyType })
    const port = server.address().port
    const native = crypto.createPrivateKey(pki.client.key)
    const keys = {
      pkcs8: pki.client.key,
      [keyType === 'rsa' ? 'pkcs1' : 'sec1']: native.export({ type: keyType === 'rsa' ? 'pkcs1' : 'sec1', format: 'pem' }),
      buffer: Buffer.from(pki.client.key)
    }
    const cas = {
      string: pki.caCert,
      buffer: Buffer.from(pki.caCert),
      array: [pki.caCert],
      rootIntermediate: { root: pki.caCert, intermediate: pki.caCert }
    }
    const forms = [
      ...Object.entries(keys).map(([name, key]) => [`key ${name}`, key, pki.caCert]),
      ...Object.entries(cas).map(([name, ca]) => [`ca ${name}`, pki.client.key, ca])
    ]
    for (const [name, key, ca] of forms) {
      const client = new Client({ host: '127.0.0.1', port, key, cert: Buffer.from(pki.client.cert), ca, autoReconnect: false })
      client.on('error', (err) => t.fail(`${keyType} ${name}: ${err.code} ${err.message}`))
      client.connect()
      await once(client, 'drain')
      client.close()
      await once(client, 'disconnect')
      t.pass(`${keyType} ${name}`)
    }
  }
})

test('a client certificate from another CA is refused by the server', async (t) => {
  const { server, pki } = await startTls(t)
  const stranger = createPki({ device: 'stranger' })
  const clientErrors = []
  server.on('clientError', (err) => clientErrors.push(err.code))
  // The stranger trusts the server, so it is the server that refuses the stranger.
  const { client, log } = track(t, { ...tlsOptions(stranger, server.address().port), ca: pki.caCert, autoReconnect: false })
  client.connect()
  const [err] = await once(client, 'error')
  t.is(err.code, 'ETLSREJECTED')
  t.regex(err.message, /TLS/)
  t.false(log.includes('connect'))
  await waitFor(() => clientErrors.length > 0)
  t.is(clientErrors[0], 'ETLS')
})

test('a server certificate from an unknown CA is refused by the client', async (t) => {
  const { server } = await startTls(t)
  const other = createPki()
  const { client } = track(t, { ...tlsOptions(other, server.address().port), autoReconnect: false })
  client.connect()
  const [err] = await once(client, 'error')
  t.is(err.code, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE')
})

test('with maxInFlight > 1, the events unacknowledged at a cut are sent again in order with their ids, after DRAINED; the acknowledged one is not', async (t) => {
  const gateway = await fakeGateway(t)
  const { client } = track(t, { host: 'localhost', port: gateway.port, maxInFlight: 4, reconnectDelay: 20 })
  const events = Array.from({ length: 6 }, (_, i) => new Event('reading', { n: i }))
  const called = []
  const results = events.map((event, i) => new Promise((resolve) => client.send(event, (err) => {
    called.push(i)
    resolve(err)
  })))
  client.connect()
  const first = await gateway.accept()
  await welcome(first)
  const written = [await first.next(), await first.next(), await first.next(), await first.next()]
  t.deepEqual(written.map((m) => m.body.id), events.slice(0, 4).map((e) => e.id))
  // The second is acknowledged (its callback waits for the first's), then the connection drops.
  first.send('ACKNOWLEDGEMENT', { correlid: events[1].id, status: 0 })
  await waitFor(() => client.stats().inFlight === 3)
  first.destroy()
  const second = await gateway.accept()
  t.is((await second.next()).name, 'HELLO')
  second.send('WELCOME')
  await t.throwsAsync(second.next(scaled(200)), { message: /timed out/ }, 'nothing is sent before DRAINED')
  second.send('DRAINED')
  const again = [await second.next(), await second.next(), await second.next()]
  t.deepEqual(again.map((m) => m.body.id), [0, 2, 3].map((i) => events[i].id), 'the three unacknowledged, in order')
  t.deepEqual(again.map((m) => m.body.bundle.n), [0, 2, 3])
  // The window runs from the oldest event whose callback has not run (the first): the fifth
  // waits for its acknowledgement.
  for (const m of again) second.send('ACKNOWLEDGEMENT', { correlid: m.body.id, status: 0 })
  const rest = [await second.next(), await second.next()]
  t.deepEqual(rest.map((m) => m.body.id), [4, 5].map((i) => events[i].id))
  for (const m of rest) second.send('ACKNOWLEDGEMENT', { correlid: m.body.id, status: 0 })
  t.deepEqual(await Promise.all(results), Array(6).fill(null))
  t.deepEqual(called, [0, 1, 2, 3, 4, 5], 'each callback once, in send order')
  t.is(client.stats().resent, 3)
})

test('a large action arrives whole, as a Buffer that outlives garbage collection', async (t) => {
  // A Buffer over 64 KiB borrows the received frame's bytes: they must live as long as it does.
  t.is(typeof global.gc, 'function', 'ava runs the tests with --expose-gc (package.json)')
  const { server, options } = await transports.tcp(t)
  const { client } = track(t, options)
  const data = Buffer.alloc(3 * 1024 * 1024)
  for (let i = 0; i < data.length; i++) data[i] = (i * 31) & 0xff
  server.queueAction(require('os').hostname(), { id: 'big', type: 'firmware', parameters: { data, small: Buffer.from('ok') } })
  const arrived = once(client, 'action')
  client.connect()
  const [action, ack] = await arrived
  ack()
  t.true(Buffer.isBuffer(action.parameters.data))
  t.true(action.parameters.data.equals(data))
  t.deepEqual(action.parameters.small, Buffer.from('ok'))
  action.parameters.data[0] ^= 0xff // the application owns it
  // A second large action, dropped at once: the collector frees its Buffer (which shows that it
  // ran), and a frame freed too early would have its memory taken by this one.
  // The registry is kept reachable to the end (a registry that is collected itself never calls
  // back), and the second action is received in a function of its own, so that no promise or
  // variable of this test still holds it.
  let freed = false
  const registry = new FinalizationRegistry(() => { freed = true })
  const receiveSecond = async () => {
    const next = once(client, 'action')
    server.queueAction(require('os').hostname(), { id: 'big-2', type: 'firmware', parameters: { data: Buffer.alloc(data.length, 0x55) } })
    const [second, ackSecond] = await next
    ackSecond()
    registry.register(second.parameters.data, 'big-2', registry)
  }
  await receiveSecond()
  const deadline = Date.now() + scaled(5000)
  while (Date.now() < deadline) {
    global.gc()
    await new Promise((resolve) => setTimeout(resolve, 20))
    if (freed) break
  }
  registry.unregister(registry)
  t.true(freed, 'the collector ran and freed the dropped Buffer')
  const expected = Buffer.from(data)
  expected[0] ^= 0xff
  t.true(action.parameters.data.equals(expected), 'the kept Buffer still holds what arrived')
})

test('ack() names the action id the server sent, even after the application wrote into the id Buffer', async (t) => {
  // An id Buffer over 64 KiB is made over the received frame's bytes: the client must not
  // read its acknowledgement's correlid from there, nor from action.id as it is now.
  const { server, options } = await transports.tcp(t)
  const { client } = track(t, { ...options, autoReconnect: false })
  const ids = [crypto.randomBytes(100 * 1024), crypto.randomBytes(16)]
  const outcomes = []
  const acknowledged = []
  const violations = []
  server.on('acknowledgement', (ack) => acknowledged.push(ack))
  server.on('clientError', (err) => violations.push(err.message))
  for (const id of ids) server.queueAction(require('os').hostname(), { id, type: 'firmware', parameters: null }, (err) => outcomes.push(err))
  const seen = []
  client.on('action', (action, ack) => {
    seen.push(Buffer.from(action.id))
    action.id.fill(0)
    ack()
  })
  client.connect()
  await waitFor(() => outcomes.length === ids.length || violations.length > 0)
  t.deepEqual(violations, [])
  t.deepEqual(outcomes, [null, null])
  t.true(seen.every((id, i) => id.equals(ids[i])), 'the actions arrived with their ids')
  t.is(acknowledged.length, 2)
  for (const [i, ack] of acknowledged.entries()) {
    t.true(Buffer.isBuffer(ack.id) && ack.id.equals(ids[i]), `acknowledgement ${i} names the id sent`)
  }
})

test('the bundled Server acknowledges an event under the id sent, even after onEvent wrote into the id Buffer', async (t) => {
  // The event's id Buffer over 64 KiB reaches onEvent over the received frame's bytes; the
  // acknowledgement, written after the verdict, must not be read from there.
  const id = crypto.randomBytes(100 * 1024)
  const arrived = []
  const { options } = await transports.tcp(t, {
    echo: false,
    onEvent: (event) => {
      arrived.push(Buffer.from(event.id))
      event.id.fill(0)
      return new Promise((resolve) => setTimeout(resolve, 10))
    }
  })
  const { client, log } = track(t, { ...options, autoReconnect: false })
  client.connect()
  const outcome = await Promise.race([
    sendAsync(client, new Event('big-id', { n: 1 }, id)),
    once(client, 'error').then(([err]) => err)
  ])
  t.is(outcome, null)
  t.true(arrived[0].equals(id))
  t.false(log.some((entry) => entry.startsWith('error')))
})

test('map keys of every shape come back as sent: empty, long, with NUL, non-ASCII, numeric', async (t) => {
  const { options } = await transports.tcp(t)
  const { client } = track(t, options)
  const actions = ackAll(client)
  const keys = ['', 'k'.repeat(63), 'k'.repeat(64), 'x'.repeat(300), 'a\u0000b', '\u0000', 'größe', '温度', '😀', '10', '__proto__x', 'constructor']
  const bundle = Object.fromEntries(keys.map((key, i) => [key, { [key]: i }]))
  client.connect()
  t.is(await sendAsync(client, new Event('keys', bundle)), null)
  await waitFor(() => actions.length === 1)
  const parameters = actions[0].parameters
  t.deepEqual(Object.keys(parameters).sort(), keys.slice().sort())
  for (const [i, key] of keys.entries()) t.deepEqual(parameters[key], { [key]: i }, JSON.stringify(key))
})

test('strings around 256 bytes of UTF-8 arrive whole as ids, types, keys and values, whatever character ends them', async (t) => {
  const { server, options } = await transports.tcp(t)
  const { client } = track(t, options)
  ackAll(client)
  const received = []
  server.on('event', (event) => received.push(event))
  client.connect()
  const sent = []
  for (let length = 248; length <= 260; length++) {
    for (const last of ['z', 'é', '€', '😀', '\ud800']) {
      const text = 'a'.repeat(length) + last + 'z'
      sent.push(text)
      client.send(new Event(text, { [text]: text }, text))
    }
  }
  await waitFor(() => received.length === sent.length)
  for (const [i, text] of sent.entries()) {
    // A lone surrogate has no UTF-8 form: it travels as U+FFFD, as Node writes it.
    const expected = text.replace('\ud800', '\ufffd')
    const event = received[i]
    t.is(event.id, expected)
    t.is(event.type, expected)
    t.deepEqual(event.bundle, { [expected]: expected })
  }
})

test('actions whose ids are strings around 256 bytes of UTF-8 are acknowledged under their own ids', async (t) => {
  const { server, options } = await transports.tcp(t)
  const { client } = track(t, options)
  const device = require('os').hostname()
  const ids = []
  for (let length = 250; length <= 258; length++) {
    for (const last of ['z', 'é', '😀', '\ud800']) ids.push('a'.repeat(length) + last)
  }
  ids.push('', 'größe', 'x'.repeat(5000))
  const outcomes = []
  for (const id of ids) server.queueAction(device, { id, type: 'check' }, (err) => outcomes.push(err))
  const seen = []
  client.on('action', (action, ack) => {
    seen.push(action.id)
    ack()
  })
  client.connect()
  await waitFor(() => outcomes.length === ids.length)
  // A lone surrogate has no UTF-8 form: it travels as U+FFFD, as Node writes it.
  t.deepEqual(seen, ids.map((id) => id.replace('\ud800', '\ufffd')))
  t.deepEqual(outcomes, ids.map(() => null), 'each acknowledgement matched its action')
})

test('a bundle that cannot be read fails its own send with EINVALIDBUNDLE, and the client carries on', async (t) => {
  const { server, options } = await transports.tcp(t)
  const { client } = track(t, options)
  ackAll(client)
  const received = []
  server.on('event', (event) => received.push(event.type))
  client.connect()
  const circular = { n: 1 }
  circular.self = circular
  const hostile = { get boom () { throw new Error('no reading this') } }
  const [first, second, third] = await Promise.all([
    sendAsync(client, new Event('circular', circular)),
    sendAsync(client, new Event('hostile', hostile)),
    sendAsync(client, new Event('fine', { n: 2 }))
  ])
  t.is(first.code, 'EINVALIDBUNDLE')
  t.regex(first.message, /nested too deeply/)
  t.is(second.code, 'EINVALIDBUNDLE')
  t.regex(second.message, /no reading this/)
  t.is(third, null)
  // Without a callback, the error is thrown by send() itself.
  const thrown = t.throws(() => client.send(new Event('circular', circular)))
  t.is(thrown.code, 'EINVALIDBUNDLE')
  // The acknowledgement can reach the client before the server's 'event' reaches JavaScript;
  // 'fine' was sent last, so once it is there nothing sent before it can still come.
  await waitFor(() => received.length > 0)
  t.deepEqual(received, ['fine'])
})

/** `levels` levels of nesting: arrays of one, with an object innermost. */
function nest (levels) {
  let value = { deepest: true }
  for (let i = 1; i < levels; i++) value = [value]
  return value
}

/** How many levels `nest()` made of `value`, and what is innermost. */
function unnest (value) {
  let levels = 1
  while (Array.isArray(value)) { value = value[0]; levels++ }
  return { levels, deepest: value }
}

test('a bundle nested as deep as the server can read goes through; one level deeper fails alone', async (t) => {
  const { server, options } = await transports.tcp(t)
  const { client } = track(t, options)
  const received = []
  server.on('event', (event) => received.push(event))
  client.connect()
  // The bundle sits inside the message's map, and a peer reads 512 levels of arrays and maps:
  // 511 levels of bundle, here arrays with an object innermost.
  const [deepest, tooDeep] = await Promise.all([
    sendAsync(client, new Event('deepest', nest(511))),
    sendAsync(client, new Event('too deep', nest(512)))
  ])
  t.is(deepest, null)
  t.is(tooDeep.code, 'EINVALIDBUNDLE')
  t.regex(tooDeep.message, /nested too deeply/)
  await waitFor(() => received.length > 0)
  t.is(received.length, 1)
  t.deepEqual(unnest(received[0].bundle), { levels: 511, deepest: { deepest: true } })
})

test('action parameters nested as deep as the client can read arrive; one level deeper is refused by queueAction', async (t) => {
  const { server, options } = await transports.tcp(t)
  const { client } = track(t, options)
  const actions = ackAll(client)
  const device = require('os').hostname()
  t.throws(() => server.queueAction(device, { id: 'too-deep', type: 'nest', parameters: nest(512) }), { message: /nested too deeply/ })
  server.queueAction(device, { id: 'deepest', type: 'nest', parameters: nest(511) })
  client.connect()
  await waitFor(() => actions.length === 1)
  t.is(actions[0].id, 'deepest')
  t.deepEqual(unnest(actions[0].parameters), { levels: 511, deepest: { deepest: true } })
})

test('a Buffer in an event is read when send() is called: changing it afterwards changes nothing', async (t) => {
  const { server, options } = await transports.tcp(t)
  const { client } = track(t, options)
  ackAll(client)
  const received = once(server, 'event')
  const data = Buffer.alloc(1024 * 1024, 1)
  // Queued before the gateway has drained: the event waits, encoded, in the native outbox.
  const done = sendAsync(client, new Event('blob', { data, list: [data.subarray(0, 3)] }))
  data.fill(2)
  client.connect()
  t.is(await done, null)
  const [event] = await received
  t.true(event.bundle.data.equals(Buffer.alloc(1024 * 1024, 1)))
  t.deepEqual(event.bundle.list, [Buffer.from([1, 1, 1])])
})

for (const [transport, setUp] of Object.entries(transports)) {
  test(`${transport}: large events sent in one turn, from one reused Buffer, each arrive whole and in order`, async (t) => {
    const { server, options } = await setUp(t)
    const { client } = track(t, options)
    ackAll(client)
    client.connect()
    await once(client, 'drain')
    const received = []
    server.on('event', (event) => received.push(event.bundle.data))
    const data = Buffer.alloc(3 * 1024 * 1024)
    const done = []
    // While this turn copies each event in turn, the socket keeps moving the earlier ones.
    for (let i = 0; i < 6; i++) {
      data.fill(i + 1)
      done.push(sendAsync(client, new Event('blob', { data })))
    }
    data.fill(0)
    t.deepEqual(await Promise.all(done), Array(6).fill(null))
    await waitFor(() => received.length === 6)
    received.forEach((got, i) => t.true(got.equals(Buffer.alloc(data.length, i + 1)), `event ${i} arrived as sent`))
  })
}

// Node's own event loop drives the clients' sockets on every platform, Windows included (where
// libuv watches them with uv_poll_init_socket): a client on the tokio runtime's threads costs up
// to a third more CPU per small message. IMT_GATEWAY_IO=tokio still selects tokio.
test('clients run on the libuv driver on every platform (Windows too), and on tokio with IMT_GATEWAY_IO=tokio', async (t) => {
  const { ioDriver } = require('imt-gateway/testing')
  const { server, pki } = await startTls(t)
  const { runNode } = require('./helpers/child')
  const exchange = (driver) => runNode(`
    const { Client, Event } = require('imt-gateway')
    const { ioDriver } = require('imt-gateway/testing')
    const client = new Client({ host: '127.0.0.1', port: ${server.address().port}, key: ${JSON.stringify(pki.client.key)}, cert: ${JSON.stringify(pki.client.cert)}, ca: ${JSON.stringify(pki.caCert)} })
    const seen = [ioDriver()]
    client.on('error', (err) => seen.push('error:' + err.code))
    client.on('drain', () => {
      client.send(new Event('reading', { n: 1 }), (err) => {
        seen.push('event:' + (err && err.code))
        console.log(JSON.stringify(seen))
        client.close()
      })
    })
    client.connect()
  `, { env: { IMT_GATEWAY_IO: driver }, timeout: 30000 })
  for (const [driver, expected] of [['', 'libuv'], ['tokio', 'tokio']]) {
    const result = await exchange(driver)
    t.is(result.signal, null, result.err)
    t.is(result.code, 0, result.err)
    t.deepEqual(JSON.parse(result.out), [expected, 'event:null'], `IMT_GATEWAY_IO=${driver} on ${process.platform}`)
  }
  const own = process.env.IMT_GATEWAY_IO === 'tokio' ? 'tokio' : 'libuv' // npm run test:tokio
  t.is(ioDriver(), own, `the driver of this test process on ${process.platform}`)
})

// A client that never connected keeps nothing alive, yet close() owes each queued event its
// callback: before, the process exited first and the callbacks never ran.
for (const io of ['libuv', 'tokio']) {
  for (const outbox of [false, true]) {
    test(`close() without a connection still calls every queued callback with ECLOSED before the process exits (${io}${outbox ? ', outbox' : ''})`, async (t) => {
      const { runNode } = require('./helpers/child')
      const result = await runNode(`
        const fs = require('fs'), os = require('os'), path = require('path')
        const { Client, Event } = require('imt-gateway')
        const outbox = ${outbox} ? { path: fs.mkdtempSync(path.join(os.tmpdir(), 'imt-close-')) } : undefined
        const client = new Client({ host: 'localhost', port: 1, outbox })
        const codes = []
        for (let i = 0; i < 3; i++) client.send(new Event('t', { i }), (err) => codes.push(err && err.code))
        client.close()
        process.on('exit', () => console.log(JSON.stringify(codes)))
      `, { env: { IMT_GATEWAY_IO: io === 'tokio' ? 'tokio' : '' } })
      t.is(result.signal, null, result.err)
      t.is(result.code, 0, result.err)
      t.deepEqual(JSON.parse(result.out), ['ECLOSED', 'ECLOSED', 'ECLOSED'])
    })
  }
}

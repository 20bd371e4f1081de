'use strict'

const test = require('ava')
const { Server, Event } = require('imt-gateway')
const { TestCertificateAuthority } = require('imt-gateway/testing')
const { RawClient, frame } = require('./helpers/raw-client')
const { start, startTls, once, waitFor } = require('./helpers/server')
const { runNode } = require('./helpers/child')

const MAX_BUFFER = 10 * 1024 * 1024

test('HELLO is answered with WELCOME then DRAINED, over plain TCP', async (t) => {
  const server = await start(t)
  const hello = once(server, 'hello')
  const client = await RawClient.connect({ port: server.address().port })
  t.deepEqual(await client.handshake('kiosk-7'), ['WELCOME', 'DRAINED'])
  const [connection] = await hello
  t.is(connection.deviceName, 'kiosk-7')
  t.deepEqual(server.connections().map((c) => c.deviceName), ['kiosk-7'])
  client.destroy()
})

test('an event is acknowledged, reported, and echoed back as an action', async (t) => {
  const server = await start(t)
  const client = await RawClient.connect({ port: server.address().port })
  await client.handshake()
  const seen = once(server, 'event')
  const stamp = new Date(Date.UTC(2026, 10, 27, 12, 0, 0))
  const bundle = { text: 'hi', n: 42, when: stamp, blob: Buffer.from([1, 2, 3]), list: [1, 'two', null] }
  client.send('EVENT', { id: 'e1', type: 'ping', bundle })
  const ack = await client.next()
  t.is(ack.name, 'ACKNOWLEDGEMENT')
  t.deepEqual(ack.body, { correlid: 'e1', status: 0 })
  const [event, connection] = await seen
  t.true(event instanceof Event)
  t.is(event.id, 'e1')
  t.is(event.type, 'ping')
  t.true(event.bundle.when instanceof Date)
  t.is(event.bundle.when.getTime(), stamp.getTime())
  t.true(Buffer.isBuffer(event.bundle.blob))
  t.is(connection.deviceName, 'test-device')

  const echo = await client.next()
  t.is(echo.name, 'ACTION')
  t.is(echo.body.type, 'ping')
  t.is(typeof echo.body.id, 'number')
  t.true(Math.abs(echo.body.id - Date.now()) < 60000)
  t.deepEqual(echo.body.parameters, bundle)
  const acked = once(server, 'acknowledgement')
  client.send('ACKNOWLEDGEMENT', { correlid: echo.body.id, status: 0 })
  const [ackInfo] = await acked
  t.is(ackInfo.status, 0)
  t.is(ackInfo.id, echo.body.id)
  client.destroy()
})

test('echoes go out one at a time, each after the previous one is acknowledged', async (t) => {
  const server = await start(t)
  const client = await RawClient.connect({ port: server.address().port })
  await client.handshake()
  client.send('EVENT', { id: 'a', type: 'first', bundle: null })
  client.send('EVENT', { id: 'b', type: 'second', bundle: null })
  const frames = [await client.next(), await client.next(), await client.next()]
  t.deepEqual(frames.map((f) => f.name).sort(), ['ACKNOWLEDGEMENT', 'ACKNOWLEDGEMENT', 'ACTION'])
  const first = frames.find((f) => f.name === 'ACTION')
  t.is(first.body.type, 'first')
  await t.throwsAsync(client.next(300), { message: /timed out/ })
  client.send('ACKNOWLEDGEMENT', { correlid: first.body.id, status: 0 })
  const second = await client.next()
  t.is(second.name, 'ACTION')
  t.is(second.body.type, 'second')
  client.destroy()
})

test('the echo carries the bytes the device sent, whatever JavaScript does to its Buffers', async (t) => {
  const server = await start(t, {
    onEvent: (event) => { event.bundle.data.fill(0xaa); event.bundle.small.fill(0xbb) }
  })
  const seen = []
  server.on('event', (event) => { seen.push(event.bundle.data[0]); event.bundle.data.fill(0xcc) })
  const client = await RawClient.connect({ port: server.address().port })
  await client.handshake()
  const data = Buffer.alloc(200 * 1024, 0x11)
  const small = Buffer.alloc(100, 0x22)
  client.send('EVENT', { id: 'e1', type: 'blob', bundle: { data, small } })
  const ack = await client.next()
  t.deepEqual(ack.body, { correlid: 'e1', status: 0 })
  const echo = await client.next()
  t.is(echo.name, 'ACTION')
  t.true(echo.body.parameters.data.equals(data), 'the large Buffer comes back as sent')
  t.true(echo.body.parameters.small.equals(small))
  t.deepEqual(seen, [0xaa], "'event' gets what onEvent left, as a JavaScript object would")
  client.destroy()
})

test('an onEvent handler rejects an event with its code and message', async (t) => {
  const server = await start(t, {
    onEvent: (event) => event.type === 'bad' ? { code: 'E_BAD', message: 'Bad event.' } : undefined
  })
  const client = await RawClient.connect({ port: server.address().port })
  await client.handshake()
  client.send('EVENT', { id: 'x1', type: 'bad', bundle: {} })
  const ack = await client.next()
  t.deepEqual(ack.body, { correlid: 'x1', status: 1, error: { message: 'Bad event.', code: 'E_BAD' } })
  // A rejected event is not echoed; an accepted one is.
  client.send('EVENT', { id: 'x2', type: 'good', bundle: {} })
  const ack2 = await client.next()
  t.deepEqual(ack2.body, { correlid: 'x2', status: 0 })
  t.is((await client.next()).body.type, 'good')
  client.destroy()
})

test('an async onEvent handler that throws rejects the event', async (t) => {
  const server = await start(t, {
    echo: false,
    onEvent: async () => { const err = new Error('Storage full.'); err.code = 'E_FULL'; throw err }
  })
  const client = await RawClient.connect({ port: server.address().port })
  await client.handshake()
  client.send('EVENT', { id: 7, type: 't', bundle: null })
  t.deepEqual((await client.next()).body, { correlid: 7, status: 1, error: { message: 'Storage full.', code: 'E_FULL' } })
  client.destroy()
})

test('queueAction without an id makes one: a random UUID without dashes, all different', async (t) => {
  const server = await start(t)
  // More than one pool of random bytes (256 ids) worth.
  const ids = Array.from({ length: 600 }, (_, i) => server.queueAction('nobody', { type: 'lamp', parameters: { i } }))
  t.true(ids.every((id) => /^[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}$/.test(id)))
  t.is(new Set(ids).size, ids.length)
  t.is(server.queueAction('nobody', { id: 'given', type: 'lamp' }), 'given')
})

test('held actions are delivered one at a time before DRAINED', async (t) => {
  const server = await start(t)
  const done = []
  const settled = ['a1', 'a2'].map((id, i) => new Promise((resolve) => {
    server.queueAction('pi-1', { id, type: 'lamp', parameters: { on: i === 0 } }, (err) => { done.push([id, err]); resolve() })
  }))
  const client = await RawClient.connect({ port: server.address().port })
  client.hello('pi-1')
  t.is((await client.next()).name, 'WELCOME')
  const first = await client.next()
  t.is(first.name, 'ACTION')
  t.deepEqual(first.body, { id: 'a1', type: 'lamp', parameters: { on: true } })
  await t.throwsAsync(client.next(300), { message: /timed out/ })
  client.send('ACKNOWLEDGEMENT', { correlid: 'a1', status: 0 })
  const second = await client.next()
  t.deepEqual(second.body, { id: 'a2', type: 'lamp', parameters: { on: false } })
  client.send('ACKNOWLEDGEMENT', { correlid: 'a2', status: 1, error: { message: 'Lamp broken.' } })
  t.is((await client.next()).name, 'DRAINED')
  await Promise.all(settled)
  t.is(done.length, 2)
  t.deepEqual(done[0], ['a1', null])
  t.is(done[1][0], 'a2')
  t.is(done[1][1].message, 'Lamp broken.')
  client.destroy()
})

test('an action queued for a drained device is delivered live', async (t) => {
  const server = await start(t, { echo: false })
  const client = await RawClient.connect({ port: server.address().port })
  await client.handshake('pi-2')
  const acked = new Promise((resolve) => server.queueAction('pi-2', { id: 9, type: 'reboot' }, resolve))
  const action = await client.next()
  t.deepEqual(action.body, { id: 9, type: 'reboot', parameters: null })
  client.send('ACKNOWLEDGEMENT', { correlid: 9, status: 0 })
  t.is(await acked, null)
  client.destroy()
})

test('an action not acknowledged before a disconnect is held for the next connection', async (t) => {
  const server = await start(t, { echo: false })
  server.queueAction('pi-3', { id: 'keep', type: 'x' })
  const first = await RawClient.connect({ port: server.address().port })
  first.hello('pi-3')
  await first.next()
  t.is((await first.next()).body.id, 'keep')
  const gone = once(server, 'disconnect')
  first.destroy()
  await gone
  const second = await RawClient.connect({ port: server.address().port })
  second.hello('pi-3')
  t.is((await second.next()).name, 'WELCOME')
  t.is((await second.next()).body.id, 'keep')
  second.destroy()
})

test('held actions are kept per device: each device gets its own, in order, and one device\'s unacknowledged action holds back no other', async (t) => {
  const server = await start(t, { echo: false })
  const settled = []
  for (const [device, id] of [['pi-a', 'a1'], ['pi-b', 'b1'], ['pi-a', 'a2'], ['pi-b', 'b2']]) {
    server.queueAction(device, { id, type: 'lamp' }, (err) => settled.push([id, err]))
  }
  const a = await RawClient.connect({ port: server.address().port })
  a.hello('pi-a')
  t.is((await a.next()).name, 'WELCOME')
  t.is((await a.next()).body.id, 'a1')
  // pi-a leaves a1 unacknowledged; pi-b connects and gets only its own actions, in order.
  const b = await RawClient.connect({ port: server.address().port })
  b.hello('pi-b')
  t.is((await b.next()).name, 'WELCOME')
  t.is((await b.next()).body.id, 'b1')
  b.send('ACKNOWLEDGEMENT', { correlid: 'b1', status: 0 })
  t.is((await b.next()).body.id, 'b2')
  b.send('ACKNOWLEDGEMENT', { correlid: 'b2', status: 0 })
  t.is((await b.next()).name, 'DRAINED')
  await waitFor(() => settled.length === 2)
  t.deepEqual(settled, [['b1', null], ['b2', null]])
  // pi-a's queue waited for it alone.
  a.send('ACKNOWLEDGEMENT', { correlid: 'a1', status: 0 })
  t.is((await a.next()).body.id, 'a2')
  a.send('ACKNOWLEDGEMENT', { correlid: 'a2', status: 0 })
  t.is((await a.next()).name, 'DRAINED')
  await waitFor(() => settled.length === 4)
  t.deepEqual(settled.slice(2), [['a1', null], ['a2', null]])
  a.destroy()
  b.destroy()
})

test('queueAction callbacks get ECLOSED when the server closes first: held for an absent device, and delivered but unacknowledged', async (t) => {
  const server = new Server({ echo: false })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => server.destroy())
  const outcomes = {}
  const settled = (id) => (err) => { outcomes[id] = err }
  server.queueAction('absent', { id: 'held', type: 'x' }, settled('held'))
  server.queueAction('present', { id: 'sent', type: 'x' }, settled('sent'))
  const client = await RawClient.connect({ port: server.address().port })
  client.hello('present')
  t.is((await client.next()).name, 'WELCOME')
  t.is((await client.next()).body.id, 'sent')
  const closed = new Promise((resolve) => server.close(resolve))
  t.is((await client.next()).name, 'BYE')
  client.destroy()
  await closed
  t.deepEqual(Object.keys(outcomes).sort(), ['held', 'sent'])
  for (const id of ['held', 'sent']) {
    t.true(outcomes[id] instanceof Error, id)
    t.is(outcomes[id].code, 'ECLOSED', id)
  }
})

test('an onEvent handler that throws synchronously rejects the event with its code and message, and the connection goes on', async (t) => {
  const server = await start(t, {
    onEvent: (event) => {
      if (event.type !== 'bad') return
      const err = new Error('No room.')
      err.code = 'E_ROOM'
      throw err
    }
  })
  const errors = []
  server.on('clientError', (err) => errors.push(err))
  const client = await RawClient.connect({ port: server.address().port })
  await client.handshake()
  client.send('EVENT', { id: 'x1', type: 'bad', bundle: {} })
  t.deepEqual((await client.next()).body, { correlid: 'x1', status: 1, error: { message: 'No room.', code: 'E_ROOM' } })
  client.send('EVENT', { id: 'x2', type: 'good', bundle: {} })
  t.deepEqual((await client.next()).body, { correlid: 'x2', status: 0 })
  t.is((await client.next()).body.type, 'good', 'the accepted event is echoed')
  t.deepEqual(errors, [])
  t.is(server.connections().length, 1)
  client.destroy()
})

test('kick() sends BYE without a body and closes every connection', async (t) => {
  const server = await start(t)
  const a = await RawClient.connect({ port: server.address().port })
  const b = await RawClient.connect({ port: server.address().port })
  await a.handshake('a')
  await b.handshake('b')
  server.kick()
  for (const client of [a, b]) {
    const bye = await client.next()
    t.is(bye.name, 'BYE')
    t.is(bye.body, null)
    await client.closed
  }
  // The server still accepts new connections after a kick.
  const c = await RawClient.connect({ port: server.address().port })
  t.deepEqual(await c.handshake(), ['WELCOME', 'DRAINED'])
  c.destroy()
})

test('a frame over 10 MiB is answered with BYE IM491', async (t) => {
  const server = await start(t)
  const reported = once(server, 'clientError')
  const client = await RawClient.connect({ port: server.address().port })
  await client.handshake()
  const header = Buffer.alloc(6)
  header[0] = 4
  header.writeUInt32LE(MAX_BUFFER + 1 - 6, 2)
  client.sendRaw(header)
  client.sendRaw(Buffer.alloc(1024 * 1024))
  const bye = await client.next()
  t.is(bye.name, 'BYE')
  t.deepEqual(bye.body, { error: { code: 'IM491', message: 'Maximum buffer size exceeded.' } })
  await client.closed
  const [err] = await reported
  t.is(err.code, 'IM491')
})

test('a frame of exactly 10 MiB is accepted', async (t) => {
  const server = await start(t, { echo: false })
  const client = await RawClient.connect({ port: server.address().port })
  await client.handshake()
  // EVENT body {id: 'big', type: 't', bundle: <bin32>}: pad the Buffer so the frame is exactly MAX_BUFFER.
  const overhead = frame(4, { id: 'big', type: 't', bundle: Buffer.alloc(70000) }).length - 70000
  const blob = Buffer.alloc(MAX_BUFFER - overhead, 7)
  const bytes = frame(4, { id: 'big', type: 't', bundle: blob })
  t.is(bytes.length, MAX_BUFFER)
  const seen = once(server, 'event')
  client.sendRaw(bytes)
  const ack = await client.next(20000)
  t.deepEqual(ack.body, { correlid: 'big', status: 0 })
  const [event] = await seen
  t.is(event.bundle.length, blob.length)
  client.destroy()
})

test('garbage bytes are answered with BYE EPROTO and the server keeps serving', async (t) => {
  const server = await start(t)
  const reported = once(server, 'clientError')
  const client = await RawClient.connect({ port: server.address().port })
  client.sendRaw(Buffer.from([0x99, 0, 3, 0, 0, 0, 1, 2, 3]))
  const bye = await client.next()
  t.is(bye.name, 'BYE')
  t.is(bye.body.error.code, 'EPROTO')
  t.regex(bye.body.error.message, /token/)
  await client.closed
  t.is((await reported)[0].code, 'EPROTO')

  // An HTTP request reads as a frame with an absurd length: refused before anything is buffered.
  const http = await RawClient.connect({ port: server.address().port })
  http.sendRaw(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'))
  const bye1 = await http.next()
  t.is(bye1.name, 'BYE')
  t.is(bye1.body.error.code, 'IM491')
  await http.closed

  const undecodable = await RawClient.connect({ port: server.address().port })
  undecodable.sendRaw(Buffer.from([1, 0, 2, 0, 0, 0, 0xc1, 0xc1]))
  const bye2 = await undecodable.next()
  t.regex(bye2.body.error.message, /^Failed to deserialize packet\./)

  const healthy = await RawClient.connect({ port: server.address().port })
  t.deepEqual(await healthy.handshake(), ['WELCOME', 'DRAINED'])
  healthy.destroy()
})

test('protocol violations are answered with BYE EPROTO', async (t) => {
  const server = await start(t)
  const port = server.address().port
  const cases = [
    [(c) => c.send('EVENT', { id: 1, type: 't', bundle: null }), /HELLO expected/],
    [async (c) => { await c.handshake(); c.send('ACKNOWLEDGEMENT', { correlid: 'nothing', status: 0 }) }, /no action in flight/],
    [async (c) => { await c.handshake(); c.send('DRAINED') }, /Unexpected/],
    [async (c) => { await c.handshake(); c.hello() }, /Unexpected HELLO/]
  ]
  for (const [act, message] of cases) {
    const client = await RawClient.connect({ port })
    await act(client)
    let bye = await client.next()
    while (bye.name !== 'BYE') bye = await client.next()
    t.is(bye.body.error.code, 'EPROTO')
    t.regex(bye.body.error.message, message)
    await client.closed
  }
})

test('mutual TLS: a device with a certificate from the CA is welcomed and listed with its subject', async (t) => {
  const { server, pki } = await startTls(t)
  const client = await RawClient.connect({
    port: server.address().port,
    tls: { key: pki.client.key, cert: pki.client.cert, ca: pki.caCert }
  })
  t.deepEqual(await client.handshake('secure-1'), ['WELCOME', 'DRAINED'])
  client.send('EVENT', { id: 's1', type: 'secure', bundle: { ok: true } })
  t.deepEqual((await client.next()).body, { correlid: 's1', status: 0 })
  t.is((await client.next()).body.type, 'secure')
  const [connection] = server.connections()
  t.is(connection.deviceName, 'secure-1')
  t.regex(connection.subject, /CN=device-1/)
  client.destroy()
})

test('mutual TLS: a certificate from another CA is refused', async (t) => {
  const { server, pki } = await startTls(t)
  const reported = once(server, 'clientError')
  const stranger = new TestCertificateAuthority('someone else').issue({ commonName: 'intruder', client: true })
  const attempt = RawClient.connect({
    port: server.address().port,
    tls: { key: stranger.key, cert: stranger.cert, ca: pki.caCert }
  }).then(async (client) => {
    // TLS 1.3 reports the refusal after the handshake, on the first read.
    client.hello()
    await client.next()
  })
  await t.throwsAsync(attempt)
  t.deepEqual(server.connections(), [])
  const [err] = await reported
  t.is(err.code, 'ETLS')
  t.regex(err.message, /TLS handshake failed/)
})

test('mutual TLS: a client without a certificate is refused', async (t) => {
  const { server, pki } = await startTls(t)
  const reported = once(server, 'clientError')
  // TLS 1.3: the client's side of the handshake completes; the server's refusal, the
  // certificate_required alert, is what the client reads next, before any frame.
  const socket = require('tls').connect({ port: server.address().port, host: '127.0.0.1', servername: 'localhost', ca: pki.caCert })
  const frames = []
  socket.on('data', (chunk) => frames.push(chunk))
  socket.once('secureConnect', () => socket.write(frame(1, { metadata: { device_name: 'no-cert' } })))
  const [err] = await once(socket, 'error')
  t.is(err.code, 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED')
  t.deepEqual(frames, [], 'no WELCOME or other frame came first')
  t.deepEqual(server.connections(), [])
  const [refusal] = await reported
  t.is(refusal.code, 'ETLS')
  t.regex(refusal.message, /TLS handshake failed/)
  socket.destroy()
})

test('a key that does not match the certificate is refused at construction', (t) => {
  const ca = new TestCertificateAuthority()
  const a = ca.issue({ commonName: 'a', server: true })
  const b = ca.issue({ commonName: 'b', server: true })
  const err = t.throws(() => new Server({ key: a.key, cert: b.cert }))
  t.is(err.code, 'EKEYMISMATCH')
  t.is(t.throws(() => new Server({ key: 'not a key', cert: a.cert })).code, 'EINVALIDKEY')
})

test('errors the native side makes carry their code, set there, and the message alone', (t) => {
  const { NativeServer } = require('../lib/native')
  const ca = new TestCertificateAuthority()
  const a = ca.issue({ commonName: 'a', server: true })
  const b = ca.issue({ commonName: 'b', server: true })
  // Straight from the binding: nothing in JavaScript sets the code or trims the message.
  const native = t.throws(() => new NativeServer({ key: Buffer.from(a.key), cert: Buffer.from(b.cert) }), { instanceOf: Error })
  t.is(native.code, 'EKEYMISMATCH')
  t.is(native.message, 'The private key does not match the certificate.')
  for (const [options, code, message] of [
    [{ key: a.key, cert: b.cert }, 'EKEYMISMATCH', 'The private key does not match the certificate.'],
    [{ key: 'not a key', cert: a.cert }, 'EINVALIDKEY', 'Invalid private key.'],
    [{ key: a.key, cert: 'not a certificate' }, 'EINVALIDCERT', 'Invalid certificate.'],
    [{ key: a.key }, 'EINVALIDKEY', 'key and cert must be given together.']
  ]) {
    const err = t.throws(() => new Server(options), { instanceOf: Error })
    t.is(err.code, code)
    t.is(err.message, message)
  }
  const unknown = t.throws(() => ca.issue({ commonName: 'c', keyType: 'dsa' }), { instanceOf: Error })
  t.is(unknown.code, 'ERR_INVALID_ARG_VALUE')
  t.is(unknown.message, "Unknown key type 'dsa'.")
})

test('queueAction refuses an action it cannot encode, with a code', (t) => {
  const server = new Server()
  const nest = (levels) => { let value = {}; for (let i = 0; i < levels; i++) value = [value]; return value }
  const deep = t.throws(() => server.queueAction('d', { type: 'nest', parameters: nest(600) }), { instanceOf: Error })
  t.is(deep.code, 'ERR_INVALID_ARG_VALUE')
  t.is(deep.message, 'Value is nested too deeply (or is circular).')
  const big = t.throws(() => server.queueAction('d', { type: 'big', parameters: { blob: Buffer.alloc(MAX_BUFFER) } }), { instanceOf: Error })
  t.is(big.code, 'IM491')
  t.is(big.message, 'Maximum buffer size exceeded.')
  t.deepEqual(server.connections(), [])
})

test('listen(0) picks a free port; close() releases it', async (t) => {
  const server = new Server()
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port, address, family } = server.address()
  t.true(port > 0)
  t.is(address, '127.0.0.1')
  t.is(family, 'IPv4')
  t.true(server.listening)
  await new Promise((resolve) => server.close(resolve))
  t.is(server.address(), null)
  t.false(server.listening)
  // The same port can be bound again at once.
  const again = new Server()
  await new Promise((resolve, reject) => { again.once('error', reject); again.listen(port, '127.0.0.1', resolve) })
  t.is(again.address().port, port)
  await new Promise((resolve) => again.destroy(resolve))
})

test('a busy port is reported as an error with code EADDRINUSE', async (t) => {
  const server = await start(t)
  const second = new Server()
  const [err] = await new Promise((resolve) => {
    second.once('error', (...args) => resolve(args))
    second.listen(server.address().port, '127.0.0.1')
  })
  t.is(err.code, 'EADDRINUSE')
})

test('close() says BYE to connected devices', async (t) => {
  const server = new Server()
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const client = await RawClient.connect({ port: server.address().port })
  await client.handshake()
  const closed = new Promise((resolve) => server.close(resolve))
  t.is((await client.next()).name, 'BYE')
  await closed
  await client.closed
})

for (const method of ['close', 'destroy']) {
  test(`a ${method}d Server does not keep the process alive`, async (t) => {
    const result = await runNode(`
      const { Server } = require('imt-gateway')
      const net = require('net')
      const server = new Server()
      server.listen(0, '127.0.0.1', () => {
        const socket = net.connect(server.address().port, '127.0.0.1', () => {
          server.${method}(() => console.log('${method}d'))
        })
        socket.on('error', () => {})
      })
    `)
    t.is(result.signal, null, 'the process had to be killed')
    t.is(result.code, 0)
    t.is(result.out.trim(), `${method}d`)
  })
}

test('listen() called right after close(), without waiting for it, listens again', async (t) => {
  const server = new Server()
  t.teardown(() => new Promise((resolve) => server.destroy(resolve)))
  for (let round = 0; round < 20; round++) {
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
    const errors = []
    server.on('error', (err) => errors.push(err))
    const closed = new Promise((resolve) => server.close(resolve))
    const listening = new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
    t.is(await closed, undefined, `close() in round ${round}`)
    await listening
    t.deepEqual(errors, [], `listen() in round ${round}`)
    t.true(server.listening)
    server.removeAllListeners('error')
    await new Promise((resolve) => server.destroy(resolve))
  }
})

test('each close() and destroy() callback runs, however its result and the close notice race', async (t) => {
  const net = require('net')
  const server = new Server()
  let closes = 0
  server.on('close', () => closes++)
  for (let round = 0; round < 60; round++) {
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
    const socket = net.connect(server.address().port, '127.0.0.1')
    socket.on('error', () => {})
    await new Promise((resolve) => socket.once('connect', resolve))
    const method = round % 2 ? 'close' : 'destroy'
    const outcome = await Promise.race([
      new Promise((resolve) => server[method]((err) => resolve(err || 'called'))),
      new Promise((resolve) => setTimeout(resolve, 5000, 'never called'))
    ])
    t.is(outcome, 'called', `${method}() in round ${round}`)
    socket.destroy()
  }
  t.is(closes, 60)
  // Closing a server that is not running says so (close) or just calls back (destroy).
  t.is((await new Promise((resolve) => server.close(resolve))).code, 'ERR_SERVER_NOT_RUNNING')
  t.is(await new Promise((resolve) => server.destroy(resolve)), undefined)
})

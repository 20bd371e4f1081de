'use strict'
// The promise API (connectAsync, sendAsync, closeAsync; Server listenAsync, closeAsync): each
// settles on what the callback API and the events report, with the same coded errors.

const test = require('ava')
const { Client, Event, Server } = require('imt-gateway')
const { fakeGateway, welcome } = require('./helpers/fake-gateway')
const { start, freePort } = require('./helpers/server')
const { runNode } = require('./helpers/child')

function localClient (t, port, options = {}) {
  const client = new Client({ host: 'localhost', port, ...options })
  t.teardown(() => client.close())
  return client
}

test('connectAsync resolves with the client at DRAINED, at once when already drained; sendAsync resolves with the accepted event', async (t) => {
  const server = await start(t, { port: 0, echo: false })
  const client = localClient(t, server.address().port)
  const seen = []
  client.on('drained', () => seen.push('drained'))
  t.is(await client.connectAsync(), client)
  t.deepEqual(seen, ['drained'])
  t.is(await client.connectAsync(), client)
  t.deepEqual(seen, ['drained'], 'no second connection cycle')
  const acks = []
  client.on('acknowledgement', (ack) => acks.push(ack))
  const event = new Event('reading', { celsius: 21.5 })
  t.is(await client.sendAsync(event), event)
  t.is(typeof event.id, 'string')
  t.deepEqual(acks, [{ correlid: event.id, status: 0 }])
})

test('sendAsync rejects with the gateway\'s code, ECLOSED, EQUEUEFULL and the validation errors', async (t) => {
  const server = await start(t, { port: 0, echo: false, onEvent: (event) => event.type === 'bad' ? { code: 'E_BAD', message: 'Refused.' } : undefined })
  const client = localClient(t, server.address().port, { maxQueueSize: 1 })
  await client.connectAsync()
  const refused = await t.throwsAsync(client.sendAsync(new Event('bad')))
  t.is(refused.code, 'E_BAD')
  t.is(refused.message, 'Refused.')
  await t.throwsAsync(client.sendAsync('reading'), { instanceOf: TypeError, message: 'Event expected.' })
  await t.throwsAsync(client.sendAsync(new Event('x', 42)), { message: 'Invalid event bundle.' })
  await t.throwsAsync(client.sendAsync(new Event('x', { n: 1n })), { code: 'EINVALIDBUNDLE' })

  const idle = localClient(t, server.address().port, { maxQueueSize: 1 })
  const first = idle.sendAsync(new Event('queued'))
  await t.throwsAsync(idle.sendAsync(new Event('over')), { code: 'EQUEUEFULL' })
  idle.close()
  await t.throwsAsync(first, { code: 'ECLOSED' })
})

test('connectAsync rejects with the error that ends the attempts (autoReconnect: false), not emitted without an error listener', async (t) => {
  const port = await freePort()
  const client = localClient(t, port, { autoReconnect: false })
  const err = await t.throwsAsync(client.connectAsync())
  t.is(err.code, 'ECONNREFUSED')
  t.is(err.message, `connect ECONNREFUSED 127.0.0.1:${port}`)

  const heard = localClient(t, port, { autoReconnect: false })
  const errors = []
  heard.on('error', (error) => errors.push(error))
  const rejected = await t.throwsAsync(heard.connectAsync())
  t.deepEqual(errors, [rejected], 'emitted as well when someone listens')
})

test('connectAsync rejects with the last error once maxReconnectAttempts is used up', async (t) => {
  const port = await freePort()
  const client = localClient(t, port, { maxReconnectAttempts: 2, reconnectDelay: 10 })
  let reconnects = 0
  client.on('reconnect', () => reconnects++)
  await t.throwsAsync(client.connectAsync(), { code: 'ECONNREFUSED' })
  t.is(reconnects, 2)
  t.is(client.recovered.ECONNREFUSED, 2)
})

test('connectAsync rejects with ECLOSED when close() comes first; closeAsync of an idle client resolves', async (t) => {
  const port = await freePort()
  const client = localClient(t, port, { reconnectDelay: 10 })
  const pending = client.connectAsync()
  client.close()
  await t.throwsAsync(pending, { code: 'ECLOSED' })
  t.is(await client.closeAsync(), client)
  t.is(await new Client({ host: 'localhost', port }).closeAsync({ keepQueue: true }) instanceof Client, true)
})

test('connectAsync rejects with the code of a BYE that ends the connection (autoReconnect: false)', async (t) => {
  const gateway = await fakeGateway(t)
  const client = localClient(t, gateway.port, { autoReconnect: false })
  const pending = client.connectAsync()
  const peer = await gateway.accept()
  await peer.next()
  peer.send('BYE', { error: { code: 'E_MAINTENANCE', message: 'Down for maintenance.' } })
  const err = await t.throwsAsync(pending)
  t.is(err.code, 'E_MAINTENANCE')
  t.is(err.message, 'Down for maintenance.')
})

test('an error the client recovers from does not reject connectAsync: it goes on to the next DRAINED', async (t) => {
  const gateway = await fakeGateway(t)
  const client = localClient(t, gateway.port, { reconnectDelay: 10 })
  const errors = []
  client.on('error', (err) => errors.push(err.code))
  const pending = client.connectAsync()
  const first = await gateway.accept()
  await first.next()
  first.send('BYE', { error: { code: 'E_BUSY', message: 'Try again.' } })
  const second = await gateway.accept()
  await welcome(second)
  t.is(await pending, client)
  t.deepEqual(errors, ['E_BUSY'])
})

test('closeAsync resolves after disconnect, with nothing left to keep the process alive', async (t) => {
  const server = await start(t, { port: 0, echo: false })
  const client = localClient(t, server.address().port)
  await client.connectAsync()
  const log = []
  client.on('disconnect', () => log.push('disconnect'))
  t.is(await client.closeAsync(), client)
  log.push('closed')
  t.deepEqual(log, ['disconnect', 'closed'])
  t.is(client._active, false)
  // The client reconnects after closeAsync as after close().
  t.is(await client.connectAsync(), client)
  await client.closeAsync()
})

test('awaited in a script: failures reject, nothing is unhandled or uncaught, and the process exits by itself', async (t) => {
  const port = await freePort()
  const result = await runNode(`
    const { Client, Event, Server } = require('imt-gateway')
    process.on('unhandledRejection', (err) => { console.log('unhandled', err.code); process.exitCode = 3 })
    process.on('uncaughtException', (err) => { console.log('uncaught', err.code); process.exitCode = 4 })
    ;(async () => {
      const client = new Client({ host: 'localhost', port: ${port}, autoReconnect: false })
      try { await client.connectAsync() } catch (err) { console.log('connect', err.code) }
      try { await new Server().listenAsync(${port}, '256.0.0.1') } catch (err) { console.log('listen', typeof err.code) }
      const server = await new Server({ echo: false }).listenAsync(0, '127.0.0.1')
      const busy = new Server()
      try { await busy.listenAsync(server.address().port, '127.0.0.1') } catch (err) { console.log('listen', err.code) }
      const device = new Client({ host: 'localhost', port: server.address().port })
      await device.connectAsync()
      await device.sendAsync(new Event('reading', { n: 1 }))
      console.log('sent')
      await device.closeAsync()
      await server.closeAsync()
      try { await server.closeAsync() } catch (err) { console.log('close', err.code) }
      console.log('done')
    })()
  `)
  t.is(result.code, 0, result.err)
  t.deepEqual(result.out.trim().split('\n'), ['connect ECONNREFUSED', 'listen string', 'listen EADDRINUSE', 'sent', 'close ERR_SERVER_NOT_RUNNING', 'done'])
})

test('Server listenAsync resolves with the listening server and closeAsync after close; failures reject', async (t) => {
  const server = new Server({ echo: false })
  const events = []
  server.on('listening', () => events.push('listening'))
  server.on('close', () => events.push('close'))
  t.is(await server.listenAsync({ port: 0, host: '127.0.0.1' }), server)
  t.true(server.listening)
  const { port } = server.address()

  const busy = new Server()
  const err = await t.throwsAsync(busy.listenAsync(port, '127.0.0.1'))
  t.is(err.code, 'EADDRINUSE')
  await t.throwsAsync(busy.listenAsync(70000), { code: 'ERR_SOCKET_BAD_PORT' })
  const heard = []
  busy.on('error', (error) => heard.push(error.code))
  await t.throwsAsync(busy.listenAsync(port, '127.0.0.1'), { code: 'EADDRINUSE' })
  t.deepEqual(heard, ['EADDRINUSE'])

  const client = new Client({ host: 'localhost', port })
  await client.connectAsync()
  t.is(await server.closeAsync(), server)
  t.deepEqual(events, ['listening', 'close'])
  t.false(server.listening)
  t.deepEqual(server.connections(), [])
  await client.closeAsync()
  await t.throwsAsync(server.closeAsync(), { code: 'ERR_SERVER_NOT_RUNNING' })
})

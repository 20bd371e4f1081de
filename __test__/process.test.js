'use strict'
// The Client and the life of the Node process around it: a process exits by itself once its
// only client is closed (or has given up), and prints nothing unless DEBUG asks for it.

const test = require('ava')
const { start } = require('./helpers/server')
const { fakeGateway, welcome } = require('./helpers/fake-gateway')
const { runNode } = require('./helpers/child')

test('a process whose only client has been closed exits by itself', async (t) => {
  const server = await start(t)
  const result = await runNode(`
    const { Client } = require('imt-gateway')
    const client = new Client({ host: 'localhost', port: ${server.address().port} })
    client.on('drain', () => { console.log('drained'); client.close() })
    client.on('disconnect', () => console.log('disconnected'))
    client.connect()
  `)
  t.is(result.signal, null, `the child had to be killed; output: ${result.out}`)
  t.is(result.code, 0)
  t.is(result.out, 'drained\ndisconnected\n')
})

// A listener that throws leaves its microtasks for the next callback scope. When the client
// reads the gateway's answer in the same turn as its own write (a read after a write, which one
// CPU for client and server makes likely: the server's thread, woken by the write, answers before
// it returns), the batch with that answer must still come after them, as a later turn's would.
test('a batch read right after a write comes after the microtasks of a listener that threw', async (t) => {
  const result = await runNode(`
    // Linux's taskset; elsewhere the order is checked all the same, the race only rarer.
    try {
      require('child_process').execFileSync('taskset', ['-a', '-p', '-c', '0', String(process.pid)], { stdio: 'ignore' })
    } catch {}
    const { Client, Server, Event } = require('imt-gateway')
    let order = []
    process.on('uncaughtException', (err) => order.push('uncaught ' + err.message))
    const server = new Server()
    server.listen(0, async () => {
      for (let i = 0; i < 20; i++) {
        order = []
        await new Promise((resolve) => {
          const client = new Client({ host: 'localhost', port: server.address().port })
          client.once('drain', () => {
            Promise.resolve().then(() => order.push('microtask'))
            client.send(new Event('after'), (err) => {
              order.push('acked ' + err)
              client.close()
              resolve()
            })
            throw new Error('boom')
          })
          client.connect()
        })
        console.log(order.join(','))
      }
      server.close()
    })
  `, { timeout: 60000 })
  t.is(result.signal, null, result.err)
  t.is(result.code, 0, result.err)
  const lines = result.out.trim().split('\n')
  t.is(lines.length, 20, result.out)
  t.deepEqual(lines.filter((line) => line !== 'uncaught boom,microtask,acked null'), [], result.out)
})

test('a process whose client gave up exits by itself', async (t) => {
  const result = await runNode(`
    const { Client } = require('imt-gateway')
    const client = new Client({ host: 'localhost', port: 1, maxReconnectAttempts: 1, reconnectDelay: 10 })
    client.on('error', (err) => console.log('error', err.code))
    client.connect()
  `)
  t.is(result.signal, null)
  t.is(result.code, 0)
  t.regex(result.out, /^error E[A-Z]+\n$/)
})

test('a connected client keeps the process alive, unless unref() is called', async (t) => {
  const server = await start(t)
  const port = server.address().port
  const kept = await runNode(`
    const { Client } = require('imt-gateway')
    const client = new Client({ host: 'localhost', port: ${port} })
    client.on('drain', () => console.log('drained'))
    client.connect()
  `, { timeout: 4000 })
  t.is(kept.out, 'drained\n')
  t.is(kept.signal, 'SIGKILL', 'still running while connected')
  const unrefd = await runNode(`
    const { Client } = require('imt-gateway')
    const client = new Client({ host: 'localhost', port: ${port} })
    client.on('drain', () => { console.log('drained'); client.unref() })
    client.connect()
  `)
  t.is(unrefd.signal, null)
  t.is(unrefd.out, 'drained\n')
})

async function protocolError (t, env) {
  const gateway = await fakeGateway(t)
  const child = runNode(`
    const { Client } = require('imt-gateway')
    const client = new Client({ host: 'localhost', port: ${gateway.port}, autoReconnect: false })
    client.on('error', (err) => { console.log('error', err.code); client.close() })
    client.connect()
  `, { env })
  const peer = await gateway.accept()
  await welcome(peer)
  peer.send('ACKNOWLEDGEMENT', { correlid: 'nothing', status: 0 })
  return child
}

test('nothing is printed on a protocol error without DEBUG', async (t) => {
  const result = await protocolError(t, {})
  t.is(result.out, 'error EPROTO\n')
  t.is(result.err, '')
})

test('DEBUG=imt:gateway:* logs to stderr', async (t) => {
  const result = await protocolError(t, { DEBUG: 'imt:gateway:*' })
  t.is(result.out, 'error EPROTO\n')
  t.regex(result.err, /imt:gateway:client .*Received acknowledgement even if there is no event in the queue\./)
  t.regex(result.err, /imt:gateway:client connect to localhost:\d+/)
})

test('a caught panic in the core prints nothing without DEBUG, and its report with it', async (t) => {
  const source = `
    const { Client } = require('imt-gateway')
    const client = new Client({ host: 'localhost', port: 1 })
    client.on('error', (err) => { console.log('error', err.code); client.close() })
    client.connect()
    client._native.__crash()
  `
  const hooks = { IMT_GATEWAY_TEST_HOOKS: '1' }
  const quiet = await runNode(source, { env: hooks })
  t.is(quiet.code, 0)
  t.is(quiet.out, 'error EINTERNAL\n')
  t.is(quiet.err, '')
  const told = await runNode(source, { env: { ...hooks, DEBUG: 'imt:gateway:*' } })
  t.is(told.out, 'error EINTERNAL\n')
  t.regex(told.err, /imt:gateway:native [\s\S]*crash requested/)
})

test('clients run on the JavaScript thread\'s event loop, or on tokio with IMT_GATEWAY_IO=tokio', async (t) => {
  const { ioDriver } = require('imt-gateway/testing')
  t.is(ioDriver(), 'libuv')
  const { server, pki } = await require('./helpers/server').startTls(t)
  const os = require('os')
  server.queueAction(os.hostname(), { id: 'held', type: 'switch', parameters: { on: true } })
  const exchange = (driver) => runNode(`
    const { Client, Event } = require('imt-gateway')
    const { ioDriver } = require('imt-gateway/testing')
    const client = new Client({ host: '127.0.0.1', port: ${server.address().port}, key: ${JSON.stringify(pki.client.key)}, cert: ${JSON.stringify(pki.client.cert)}, ca: ${JSON.stringify(pki.caCert)} })
    const seen = [ioDriver()]
    client.on('action', (action, ack) => { seen.push('action:' + action.id); ack() })
    client.on('drain', () => {
      client.send(new Event('reading', { n: 1 }), (err) => {
        seen.push('event:' + err)
        console.log(JSON.stringify(seen))
        client.close()
      })
    })
    client.connect()
  `, { env: driver ? { IMT_GATEWAY_IO: driver } : {} })
  const onTokio = await exchange('tokio')
  t.is(onTokio.code, 0, onTokio.err)
  t.deepEqual(JSON.parse(onTokio.out), ['tokio', 'action:held', 'event:null'])
  const onLoop = await exchange()
  t.is(onLoop.code, 0, onLoop.err)
  t.deepEqual(JSON.parse(onLoop.out), [ioDriver(), 'event:null'], 'the held action was acknowledged by the first client')
})

// Listeners are called straight from the event loop when the gateway's bytes arrive: an
// exception they throw must surface as any listener's would, and cost no later notice.
for (const io of ['libuv', 'tokio']) {
  test(`a throwing listener is an uncaught exception, and the client carries on (${io})`, async (t) => {
    const server = await start(t)
    const program = (handler) => `
      const { Client, Event } = require('imt-gateway')
      ${handler}
      const client = new Client({ host: 'localhost', port: ${server.address().port} })
      let thrown = false
      client.on('drain', () => {
        console.log('drain')
        if (thrown) return
        thrown = true
        Promise.resolve().then(() => console.log('microtask'))
        client.send(new Event('after'), (err) => { console.log('acked', err); client.close() })
        throw new Error('boom')
      })
      client.on('connect', () => console.log('connect'))
      client.connect()
    `
    const env = io === 'tokio' ? { IMT_GATEWAY_IO: 'tokio' } : {}
    const handled = await runNode(program("process.on('uncaughtException', (err) => console.log('uncaught', err.message))"), { env })
    t.is(handled.signal, null, handled.err)
    t.is(handled.code, 0, handled.err)
    t.is(handled.out, 'connect\ndrain\nuncaught boom\nmicrotask\nacked null\n')
    const unhandled = await runNode(program(''), { env })
    t.is(unhandled.signal, null, unhandled.err)
    t.is(unhandled.code, 1)
    t.is(unhandled.out, 'connect\ndrain\n')
    t.regex(unhandled.err, /Error: boom/)
  })
}

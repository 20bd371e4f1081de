'use strict'
// The `proxy` option and the proxy environment variables, against real proxies started here: an
// HTTP CONNECT proxy (npm `proxy`, Basic authentication through its `authenticate` hook) and a
// SOCKS5 server (npm `@mongodb-js/socksv5`, RFC 1929 user and password), each with and without
// authentication, and refusing. TLS runs end to end through the tunnel: the bytes each proxy
// relays from the client are captured and hold no plaintext of the event. Also run on the tokio
// driver (`npm run test:tokio`).

const test = require('ava')
const http = require('http')
const net = require('net')
const { Client, Event } = require('imt-gateway')
const { startTls, start, waitFor } = require('./helpers/server')
const { runNode } = require('./helpers/child')

// In every event sent: it must never show in the bytes a proxy relays over TLS.
const MARKER = 'plaintext-bundle-marker-7f3a'

/** An HTTP CONNECT proxy on loopback; `auth` ('user:pass') makes it demand Basic credentials. */
async function httpProxy (t, { auth } = {}) {
  const { createProxy } = await import('proxy')
  const server = createProxy(http.createServer())
  const seen = { connects: [], relayed: [] }
  if (auth) {
    const expected = 'Basic ' + Buffer.from(auth).toString('base64')
    server.authenticate = (req) => req.headers['proxy-authorization'] === expected
  }
  // After the proxy's own listener, which pauses the socket until it has authenticated the
  // request: from then on every byte the client sends into the tunnel comes through here too.
  server.on('connect', (req, socket) => {
    seen.connects.push(req.url)
    socket.on('data', (chunk) => seen.relayed.push(chunk))
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    server.closeAllConnections()
    server.close()
  })
  const port = server.address().port
  return { url: `http://${auth ? auth + '@' : ''}127.0.0.1:${port}`, port, seen }
}

/** A SOCKS5 server on loopback; `auth` ('user:pass') demands RFC 1929 credentials; `deny` refuses every CONNECT. */
async function socksProxy (t, { auth, deny } = {}) {
  const socks = require('@mongodb-js/socksv5')
  const seen = { connects: [], relayed: [] }
  const sockets = new Set()
  const server = socks.createServer((info, accept, refuse) => {
    seen.connects.push(`${info.dstAddr}:${info.dstPort}`)
    if (deny) return refuse()
    // Intercepted, so the relay is ours and its bytes can be captured.
    const client = accept(true)
    const target = net.connect(info.dstPort, info.dstAddr)
    sockets.add(client).add(target)
    client.on('data', (chunk) => seen.relayed.push(chunk))
    client.on('error', () => target.destroy())
    target.on('error', () => client.destroy())
    client.pipe(target).pipe(client)
  })
  server.useAuth(auth
    ? socks.auth.UserPassword((user, password, callback) => callback(`${user}:${password}` === auth))
    : socks.auth.None())
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    for (const socket of sockets) socket.destroy()
    server.close()
  })
  const port = server.address().port
  return { url: `socks5://${auth ? auth + '@' : ''}127.0.0.1:${port}`, port, seen }
}

/** A TLS gateway and the options of a client for it (by IP address: a name the proxy resolves alike). */
async function tlsGateway (t) {
  const { server, pki } = await startTls(t)
  const received = []
  server.on('event', (event) => received.push(event.bundle))
  const options = { host: '127.0.0.1', port: server.address().port, key: pki.client.key, cert: pki.client.cert, ca: pki.caCert }
  return { server, pki, options, received }
}

function newClient (t, options) {
  const client = new Client(options)
  t.teardown(() => client.close())
  return client
}

/** Connects, sends one event with the marker and waits for its acknowledgement. */
async function deliver (t, options) {
  const client = newClient(t, options)
  const started = process.hrtime.bigint()
  await client.connectAsync()
  const ms = Number(process.hrtime.bigint() - started) / 1e6
  await client.sendAsync(new Event('reading', { marker: MARKER }))
  return { client, ms }
}

function assertCiphertextOnly (t, seen) {
  const relayed = Buffer.concat(seen.relayed)
  // The TLS handshake and the event went through the tunnel...
  t.true(relayed.length > 500, `the proxy relayed ${relayed.length} bytes`)
  t.is(relayed[0], 0x16, 'the first byte in the tunnel opens a TLS handshake record')
  // ...and none of it is readable.
  t.false(relayed.includes(MARKER), 'no plaintext bundle in what the proxy relayed')
}

for (const [name, make] of [['HTTP CONNECT', httpProxy], ['SOCKS5', socksProxy]]) {
  for (const auth of [undefined, 'device:s3cret']) {
    const how = auth ? 'with authentication' : 'without authentication'
    test(`TLS to the gateway through an ${name} proxy ${how}: delivered, and the proxy sees only ciphertext`, async (t) => {
      const gateway = await tlsGateway(t)
      const proxy = await make(t, { auth })
      const { ms } = await deliver(t, { ...gateway.options, proxy: proxy.url })
      t.log(`connected through the proxy in ${ms.toFixed(1)} ms`)
      // The server's event may reach its JavaScript after the client has the acknowledgement.
      await waitFor(() => gateway.received.length > 0)
      t.deepEqual(gateway.received, [{ marker: MARKER }])
      t.deepEqual(proxy.seen.connects, [`127.0.0.1:${gateway.options.port}`])
      assertCiphertextOnly(t, proxy.seen)
    })
  }
}

/** The error that ends a client with `autoReconnect: false`. */
async function refusal (t, options) {
  const client = newClient(t, { ...options, autoReconnect: false })
  const err = await t.throwsAsync(client.connectAsync())
  return err
}

test('an HTTP proxy that refuses the password: EPROXY with proxyStatus 407, the password not shown', async (t) => {
  const gateway = await tlsGateway(t)
  const proxy = await httpProxy(t, { auth: 'device:right' })
  const err = await refusal(t, { ...gateway.options, proxy: `http://device:wrong@127.0.0.1:${proxy.port}` })
  t.is(err.code, 'EPROXY')
  t.is(err.proxyStatus, 407)
  t.false('socksReply' in err)
  t.regex(err.message, /407/)
  t.false(err.message.includes('wrong'), err.message)
  t.deepEqual(gateway.received, [])
})

test('a refusing proxy fails each attempt, with the usual backoff between them, and ends with EPROXY', async (t) => {
  const gateway = await tlsGateway(t)
  const proxy = await httpProxy(t, { auth: 'device:right' })
  const client = newClient(t, { ...gateway.options, proxy: `http://127.0.0.1:${proxy.port}`, reconnectDelay: 20, maxReconnectAttempts: 3 })
  // The attempts while reconnecting are recovered from, as other connection failures; the
  // error that ends them is the application's, with the proxy's answer on it.
  const err = await t.throwsAsync(client.connectAsync())
  t.is(err.code, 'EPROXY')
  t.is(err.proxyStatus, 407)
  t.true(client.recovered.EPROXY >= 3, JSON.stringify(client.recovered))
  t.true(proxy.seen.connects.length >= 4, `${proxy.seen.connects.length} CONNECTs`)
})

test('a SOCKS5 server that refuses the password: EPROXY, authentication failed, the password not shown', async (t) => {
  const gateway = await tlsGateway(t)
  const proxy = await socksProxy(t, { auth: 'device:right' })
  const err = await refusal(t, { ...gateway.options, proxy: `socks5://device:wrong@127.0.0.1:${proxy.port}` })
  t.is(err.code, 'EPROXY')
  t.regex(err.message, /authentication failed/)
  t.false(err.message.includes('wrong'), err.message)
  t.false('proxyStatus' in err)
  t.deepEqual(proxy.seen.connects, [], 'no CONNECT without authentication')
})

test('a SOCKS5 server that demands credentials none were given for: EPROXY', async (t) => {
  const gateway = await tlsGateway(t)
  const proxy = await socksProxy(t, { auth: 'device:right' })
  const err = await refusal(t, { ...gateway.options, proxy: `socks5://127.0.0.1:${proxy.port}` })
  t.is(err.code, 'EPROXY')
  t.regex(err.message, /requires authentication/)
})

test('a SOCKS5 server that denies the connection: EPROXY with socksReply 2', async (t) => {
  const gateway = await tlsGateway(t)
  const proxy = await socksProxy(t, { deny: true })
  const err = await refusal(t, { ...gateway.options, proxy: proxy.url })
  t.is(err.code, 'EPROXY')
  t.is(err.socksReply, 2)
  t.false('proxyStatus' in err)
  t.regex(err.message, /connection not allowed by ruleset/)
  t.deepEqual(proxy.seen.connects, [`127.0.0.1:${gateway.options.port}`])
})

test('an explicit proxy carries plain TCP (host: localhost) too', async (t) => {
  const server = await start(t)
  const received = []
  server.on('event', (event) => received.push(event.bundle))
  const proxy = await httpProxy(t)
  await deliver(t, { host: 'localhost', port: server.address().port, proxy: proxy.url })
  await waitFor(() => received.length > 0)
  t.deepEqual(received, [{ marker: MARKER }])
  t.deepEqual(proxy.seen.connects, [`localhost:${server.address().port}`])
  // Without TLS the proxy reads the event: the capture above would see a plaintext leak.
  t.true(Buffer.concat(proxy.seen.relayed).includes(MARKER))
})

test('proxy options are checked: a bad URL throws ERR_INVALID_ARG_VALUE without its password, a bad type ERR_INVALID_ARG_TYPE', (t) => {
  const base = { host: 'localhost', port: 1 }
  for (const proxy of ['ftp://u:hunter2@proxy:21', 'http://u:hunter2@proxy:0', 'http://u:hunter2@/', 'proxy:3128', '']) {
    const err = t.throws(() => new Client({ ...base, proxy }), undefined, proxy)
    t.is(err.code, 'ERR_INVALID_ARG_VALUE', proxy)
    t.false(err.message.includes('hunter2'), err.message)
  }
  for (const proxy of [42, true, {}, ['http://proxy:3128']]) {
    t.is(t.throws(() => new Client({ ...base, proxy })).code, 'ERR_INVALID_ARG_TYPE', String(proxy))
  }
  t.is(t.throws(() => new Client({ ...base, servername: 7 })).code, 'ERR_INVALID_ARG_TYPE')
  t.is(t.throws(() => new Client({ ...base, servername: 'bad name!' })).code, 'ERR_INVALID_ARG_VALUE')
  t.is(t.throws(() => new Client({ ...base, lookup: 'dns' })).code, 'ERR_INVALID_ARG_TYPE')
  t.notThrows(() => new Client({ ...base, proxy: false, servername: 'gw.example', lookup: require('dns').lookup }))
})

// A child process with the proxy variables set connects to the gateway and reports.
async function connectInChild (t, gateway, env, extra = '') {
  const pki = JSON.stringify({ key: gateway.pki.client.key, cert: gateway.pki.client.cert, ca: gateway.pki.caCert })
  const result = await runNode(`
    const { Client } = require('imt-gateway')
    const client = new Client({ host: '127.0.0.1', port: ${gateway.options.port}, ...${pki}, autoReconnect: false ${extra} })
    client.connectAsync().then(() => { console.log('drained'); client.close() },
      (err) => { console.log('failed ' + err.code); client.close() })
  `, { env })
  t.is(result.signal, null, result.err)
  return result.out.trim()
}

const NO_PROXY_VARS = { https_proxy: '', HTTPS_PROXY: '', all_proxy: '', ALL_PROXY: '', no_proxy: '', NO_PROXY: '' }

test('HTTPS_PROXY is honoured, NO_PROXY exempts the gateway, proxy: false ignores the environment', async (t) => {
  const gateway = await tlsGateway(t)
  const proxy = await httpProxy(t)
  const target = `127.0.0.1:${gateway.options.port}`

  t.is(await connectInChild(t, gateway, { ...NO_PROXY_VARS, HTTPS_PROXY: proxy.url }), 'drained')
  t.deepEqual(proxy.seen.connects, [target], 'through the proxy')

  t.is(await connectInChild(t, gateway, { ...NO_PROXY_VARS, HTTPS_PROXY: proxy.url, NO_PROXY: 'example.com, 127.0.0.1' }), 'drained')
  t.is(await connectInChild(t, gateway, { ...NO_PROXY_VARS, https_proxy: proxy.url, no_proxy: `*.example.com,127.0.0.1:${gateway.options.port}` }), 'drained')
  t.is(await connectInChild(t, gateway, { ...NO_PROXY_VARS, ALL_PROXY: proxy.url }, ', proxy: false'), 'drained')
  t.deepEqual(proxy.seen.connects, [target], 'NO_PROXY and proxy: false went straight')

  // An unusable variable fails the connection rather than going around the proxy.
  t.is(await connectInChild(t, gateway, { ...NO_PROXY_VARS, HTTPS_PROXY: 'gopher://proxy:70' }), 'failed EPROXY')
  // And a NO_PROXY for another port does not exempt this one.
  t.is(await connectInChild(t, gateway, { ...NO_PROXY_VARS, HTTPS_PROXY: proxy.url, NO_PROXY: '127.0.0.1:1' }), 'drained')
  t.deepEqual(proxy.seen.connects, [target, target])
})

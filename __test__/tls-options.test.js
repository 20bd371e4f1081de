'use strict'
// TLS options fail closed: a `key`, `cert` or `ca` that was given but yields nothing usable is
// refused at construction with its code, in Client and Server alike. Before, `ca: []`, `{}`,
// `{rootCA: ...}` or items of the wrong type meant "no ca": the client trusted the platform's
// public roots and the server admitted clients without certificates.

const test = require('ava')
const { Client, Server } = require('imt-gateway')
const { createPki } = require('imt-gateway/testing')
const { RawClient } = require('./helpers/raw-client')
const { start } = require('./helpers/server')

const pki = createPki()

// What a user might mistakenly pass as `ca`, and what each must be refused for.
const badCas = [
  ['an empty array', []],
  ['an empty object', {}],
  ['an object with other keys', { rootCA: pki.caCert }],
  ['an object whose root is a number', { root: 42 }],
  ['an array holding a number', [pki.caCert, 42]],
  ['an array holding null', [null]],
  ['a number', 7],
  ['an empty string', ''],
  ['an empty Buffer', Buffer.alloc(0)],
  ['text that is not PEM', 'my-ca.pem'],
  ['a PEM with a key and no certificate', pki.client.key]
]

const clientOptions = (extra) => ({ host: '127.0.0.1', port: 1, key: pki.client.key, cert: pki.client.cert, ...extra })
const serverOptions = (extra) => ({ key: pki.server.key, cert: pki.server.cert, ...extra })

for (const [what, ca] of badCas) {
  test(`Client: ca given as ${what} is refused with EINVALIDCA`, (t) => {
    const err = t.throws(() => new Client(clientOptions({ ca })))
    t.is(err.code, 'EINVALIDCA')
  })

  test(`Server: ca given as ${what} is refused with EINVALIDCA`, (t) => {
    const err = t.throws(() => new Server(serverOptions({ ca })))
    t.is(err.code, 'EINVALIDCA')
  })
}

test('the error names what was wrong', (t) => {
  t.regex(t.throws(() => new Client(clientOptions({ ca: [] }))).message, /options\.ca is an empty array/)
  t.regex(t.throws(() => new Server(serverOptions({ ca: { rootCA: pki.caCert } }))).message, /'rootCA'/)
  t.regex(t.throws(() => new Server(serverOptions({ ca: [pki.caCert, 42] }))).message, /options\.ca\[1\]/)
})

test('key and cert of the wrong type or empty are refused, never read as "not given"', (t) => {
  t.is(t.throws(() => new Client(clientOptions({ key: 42 }))).code, 'EINVALIDKEY')
  t.is(t.throws(() => new Client(clientOptions({ cert: {} }))).code, 'EINVALIDCERT')
  // A Server given a key of the wrong type spoke plain TCP before: key and cert read as absent.
  t.is(t.throws(() => new Server({ key: 42, cert: {} })).code, 'EINVALIDKEY')
  t.is(t.throws(() => new Server({ key: '', cert: '' })).code, 'EINVALIDKEY')
  t.is(t.throws(() => new Server(serverOptions({ cert: Buffer.alloc(0) }))).code, 'EINVALIDCERT')
})

test('Server: ca without key and cert is refused (no plain-TCP server that checks nobody)', (t) => {
  t.is(t.throws(() => new Server({ ca: pki.caCert })).code, 'EINVALIDKEY')
  t.is(t.throws(() => new Server({ key: pki.server.key, ca: pki.caCert })).code, 'EINVALIDCERT')
})

test('the forms that name a CA are still accepted', (t) => {
  for (const ca of [pki.caCert, Buffer.from(pki.caCert), [pki.caCert], { root: pki.caCert }, { intermediate: pki.caCert }, { root: pki.caCert, intermediate: undefined }]) {
    t.notThrows(() => new Client(clientOptions({ ca })))
    t.notThrows(() => new Server(serverOptions({ ca })))
  }
  // Plain TCP (`host: 'localhost'`) reads no TLS option, as in 2.x.
  t.notThrows(() => new Client({ host: 'localhost', ca: [] }))
})

test('a Server given a CA admits only clients with a certificate from it', async (t) => {
  const server = await start(t, serverOptions({ ca: { root: pki.caCert } }))
  const port = server.address().port
  const refused = RawClient.connect({ port, tls: { ca: pki.caCert } })
    .then(async (client) => { client.hello(); await client.next() })
  await t.throwsAsync(refused)
  const admitted = await RawClient.connect({ port, tls: { key: pki.client.key, cert: pki.client.cert, ca: pki.caCert } })
  t.deepEqual(await admitted.handshake('device-1'), ['WELCOME', 'DRAINED'])
  admitted.destroy()
})

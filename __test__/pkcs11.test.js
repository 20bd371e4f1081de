'use strict'
// Hardware-backed private keys (PKCS#11) against a real token: SoftHSM 2, its tokens in a
// temporary directory, an RSA and an EC P-256 key generated in the token by pkcs11-tool, a
// certificate for each issued by the test CA for the public key read back from the token (no
// private key ever exists outside the token). Mutual TLS to the bundled Server through each, the
// Server with a token key too, the construction errors with their codes, a token removed while
// connected. Skipped, saying why, where SoftHSM is not installed (scripts/toolchains.sh pkcs11).

const test = require('ava')
const fs = require('fs')
const { Client, Server } = require('imt-gateway')
const { TestCertificateAuthority } = require('imt-gateway/testing')
const { unavailable, createSoftHsm } = require('./helpers/softhsm')
const { start, waitFor } = require('./helpers/server')

const why = unavailable()
const run = why ? test.skip : test.serial
if (why) test(`PKCS#11 tests skipped: ${why}`, (t) => t.pass())

let hsm
let ca
let rsa
let ec
let serverCert
if (!why) {
  // One SoftHSM configuration per process: the module reads SOFTHSM2_CONF once.
  hsm = createSoftHsm()
  test.after.always(() => hsm.remove())
  hsm.initToken('device')
  hsm.initToken('gateway')
  hsm.initToken('spare')
  hsm.initToken('locked')
  hsm.generateKey('locked', 'EC:prime256v1', 'locked-key', '04')
  hsm.lockUserPin('locked')
  ca = new TestCertificateAuthority('pkcs11 test root')
  const issue = (name, spki, extra) => ca.issue({ commonName: name, publicKey: spki, ...extra }).cert
  rsa = { cert: issue('rsa-device', hsm.generateKey('device', 'rsa:2048', 'rsa-key', '01'), { client: true }), uri: hsm.uri('device', 'rsa-key') }
  ec = { cert: issue('ec-device', hsm.generateKey('device', 'EC:prime256v1', 'ec-key', '02'), { client: true }), uri: hsm.uri('device', 'ec-key') }
  serverCert = issue('localhost', hsm.generateKey('gateway', 'EC:prime256v1', 'tls-key', '03'), { server: true, altNames: ['localhost', '127.0.0.1'] })
  hsm.writeCert('device', ec.cert, 'ec-cert', '02')
}

function serverOptions (extra = {}) {
  const pem = ca.issue({ commonName: 'localhost', altNames: ['localhost', '127.0.0.1'], server: true })
  return { key: pem.key, cert: pem.cert, ca: ca.cert, ...extra }
}

function client (t, server, options) {
  const c = new Client({ host: '127.0.0.1', port: server.address().port, ca: ca.cert, reconnectDelay: 50, ...options })
  t.teardown(() => c.close())
  return c
}

async function connectsAs (t, server, options, name) {
  const hello = new Promise((resolve) => server.once('hello', (connection) => resolve(connection.subject)))
  const c = client(t, server, options)
  await c.connectAsync()
  t.regex(await hello, new RegExp(`CN=${name}`))
  t.is(c.certificate.subject.CN, name)
  return c
}

run('a wrong PIN is EPKCS11PIN, before any login in this process', (t) => {
  // The token's login belongs to the process once made, so this runs first.
  const err = t.throws(() => new Client({ host: '127.0.0.1', port: 1, key: hsm.uri('device', 'rsa-key', { pin: '0000' }), cert: rsa.cert, ca: ca.cert }))
  t.is(err.code, 'EPKCS11PIN')
  t.notRegex(err.message, /0000/, 'the PIN is not in the message')
  const none = t.throws(() => new Client({ host: '127.0.0.1', port: 1, key: hsm.uri('device', 'rsa-key', { pin: null }), cert: rsa.cert, ca: ca.cert }))
  t.is(none.code, 'EPKCS11PIN')
})

run('a token whose user PIN is locked is EPKCS11PINLOCKED, and no login is tried', (t) => {
  const err = t.throws(() => new Client({ host: '127.0.0.1', port: 1, key: hsm.uri('locked', 'locked-key'), cert: ec.cert, ca: ca.cert }))
  t.is(err.code, 'EPKCS11PINLOCKED')
  t.regex(err.message, /locked/)
  t.notRegex(err.message, new RegExp(hsm.pin), 'the PIN is not in the message')
})

run('mutual TLS with an RSA key generated in the token', async (t) => {
  const server = await start(t, serverOptions())
  await connectsAs(t, server, { key: rsa.uri, cert: rsa.cert }, 'rsa-device')
})

run('mutual TLS with an EC P-256 key in the token, named by the object form, the certificate read from the token', async (t) => {
  const server = await start(t, serverOptions())
  const key = { pkcs11: { module: hsm.module, token: 'device', object: 'ec-key', pin: hsm.pin } }
  await connectsAs(t, server, { key, cert: hsm.uri('device', 'ec-cert', { type: 'cert' }) }, 'ec-device')
  await connectsAs(t, server, { key: { pkcs11: { module: hsm.module, token: 'device', id: '02', pin: hsm.pin } }, cert: ec.cert }, 'ec-device')
})

run('the Server signs with a key in the token', async (t) => {
  const server = await start(t, { key: hsm.uri('gateway', 'tls-key'), cert: serverCert, ca: ca.cert })
  await connectsAs(t, server, { key: ec.uri, cert: ec.cert }, 'ec-device')
  const other = ca.issue({ commonName: 'pem-device', client: true })
  await connectsAs(t, server, { key: other.key, cert: other.cert }, 'pem-device')
})

run('construction errors have their codes: object, module, key type, mismatch, URI', (t) => {
  const make = (key, cert = rsa.cert) => t.throws(() => new Client({ host: '127.0.0.1', port: 1, key, cert, ca: ca.cert }))
  t.is(make(hsm.uri('device', 'no-such-key')).code, 'EPKCS11OBJECT')
  t.is(make(hsm.uri('nowhere', 'rsa-key')).code, 'EPKCS11TOKEN')
  const missing = make(hsm.uri('device', 'rsa-key').replace(/module-path=[^&]*/, 'module-path=%2Fnonexistent%2Flibpkcs11.so'))
  t.is(missing.code, 'EPKCS11MODULE')
  t.regex(missing.message, /nonexistent/)
  t.is(make(hsm.uri('device', 'rsa-key', { type: 'cert' })).code, 'EPKCS11OBJECT')
  t.is(make(rsa.uri, ec.cert).code, 'EKEYMISMATCH')
  // A key on a curve TLS does not sign with here (secp256k1).
  hsm.generateKey('spare', 'EC:secp256k1', 'k1-key', '0a')
  t.is(make(hsm.uri('spare', 'k1-key')).code, 'EPKCS11KEYTYPE')
  t.is(make(rsa.uri.replace('object=', 'objet=')).code, 'EPKCS11URI')
  t.is(make({ pkcs11: { module: hsm.module, object: 'rsa-key' } }).code, 'EPKCS11URI')
  t.is(make({ pkcs11: { module: hsm.module, token: 'device', object: 'rsa-key', pni: '1' } }).code, 'EPKCS11URI')
  t.is(make({ pkcs11: { token: 'device', object: 'rsa-key' } }).code, 'EPKCS11URI')
  t.is(t.throws(() => new Server({ key: hsm.uri('gateway', 'nothing'), cert: serverCert, ca: ca.cert })).code, 'EPKCS11OBJECT')
  // A file whose name starts with pkcs11: is still a file.
  t.is(make({ path: 'pkcs11:not-a-file' }).code, 'ENOENT')
})

run('a token removed while connected fails the next handshake with EPKCS11TOKEN and the usual backoff, without a crash; new credentials on a token that is there connect', async (t) => {
  const key = hsm.generateKey('spare', 'EC:prime256v1', 'spare-key', '09')
  const cert = ca.issue({ commonName: 'spare-device', client: true, publicKey: key }).cert
  const server = await start(t, serverOptions())
  const c = await connectsAs(t, server, { key: hsm.uri('spare', 'spare-key'), cert }, 'spare-device')
  const errors = []
  c.on('error', (err) => errors.push(err.code))
  // The token goes away (SoftHSM notices its directory gone), then the gateway drops us.
  const dir = hsm.tokenDir('spare')
  fs.renameSync(dir, `${dir}.removed`)
  t.teardown(() => fs.rmSync(`${dir}.removed`, { recursive: true, force: true }))
  server.kick()
  await waitFor(() => (c.recovered.EPKCS11TOKEN || 0) >= 3)
  t.deepEqual(errors, [], 'recovered while reconnecting, as every connection error')
  // Material on a token that is there: the next attempt connects.
  const hello = new Promise((resolve) => server.once('hello', (connection) => resolve(connection.subject)))
  c.setCredentials({ key: ec.uri, cert: ec.cert })
  t.regex(await hello, /CN=ec-device/)
})

run('the imt-gateway command sends through a key in the token (--key pkcs11:...)', async (t) => {
  const { spawnSync } = require('child_process')
  const path = require('path')
  const server = await start(t, serverOptions())
  const dir = fs.mkdtempSync(path.join(require('os').tmpdir(), 'imt-pkcs11-cli-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  fs.writeFileSync(path.join(dir, 'cert.pem'), rsa.cert)
  fs.writeFileSync(path.join(dir, 'ca.pem'), ca.cert)
  const events = []
  server.on('event', (event) => events.push(event.type))
  const bin = path.join(__dirname, '..', 'bin', 'imt-gateway.js')
  const args = ['send', 'hw', '{"n":1}', '--host', '127.0.0.1', '--port', String(server.address().port), '--cert', path.join(dir, 'cert.pem'), '--ca', path.join(dir, 'ca.pem')]
  // spawnSync would block the server's thread: run the child asynchronously.
  const result = await new Promise((resolve) => {
    const child = require('child_process').spawn(process.execPath, [bin, ...args, '--key', rsa.uri], { env: process.env })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (data) => { stdout += data })
    child.stderr.on('data', (data) => { stderr += data })
    child.on('close', (status, signal) => resolve({ status, signal, stdout, stderr }))
  })
  t.is(result.signal, null)
  t.is(result.status, 0, result.stderr)
  t.deepEqual(events, ['hw'])
  // A missing object: exit 1 with the code, no crash.
  const missing = spawnSync(process.execPath, [bin, ...args, '--key', hsm.uri('device', 'nothing')], { env: process.env, encoding: 'utf8' })
  t.is(missing.signal, null)
  t.is(missing.status, 1)
  t.regex(missing.stderr, /EPKCS11OBJECT/)
})

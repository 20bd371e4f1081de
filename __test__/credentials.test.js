'use strict'
// Credentials from files, re-read at every connection attempt; setCredentials() on the Client and
// the Server; the device certificate's lifetime (client.certificate, certificateExpiresIn,
// certificateExpiring, CERT_HAS_EXPIRED before connecting). Real TLS between a Client and the
// bundled Server, certificates made at run time, real files in a temporary directory.

const test = require('ava')
const fs = require('fs')
const os = require('os')
const path = require('path')
const crypto = require('crypto')
const { Client, Event } = require('imt-gateway')
const { TestCertificateAuthority } = require('imt-gateway/testing')
const { start, startTls, once, waitFor } = require('./helpers/server')
const { scaled } = require('./helpers/time')

function tempDir (t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imt-creds-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

// Writes `text` to `file` as provisioning tooling does: a new file renamed over the old one.
function replace (file, text) {
  fs.writeFileSync(`${file}.new`, text)
  fs.renameSync(`${file}.new`, file)
}

// The device's key, certificate and the CA as files in `dir`; returns the `{ path }` options.
function writeFiles (dir, issued, caCert) {
  const files = { key: path.join(dir, 'key.pem'), cert: path.join(dir, 'cert.pem'), ca: path.join(dir, 'ca.pem') }
  replace(files.key, issued.key)
  replace(files.cert, issued.cert)
  replace(files.ca, caCert)
  return files
}

// crypto.X509Certificate's `subject`/`issuer` ("CN=x\nO=y") as tls.PeerCertificate's object.
function names (text) {
  return Object.fromEntries(text.split('\n').map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]))
}

function fileOptions (files) {
  return { key: { path: files.key }, cert: { path: files.cert }, ca: { path: files.ca } }
}

function client (t, server, options) {
  const c = new Client({ host: '127.0.0.1', port: server.address().port, reconnectDelay: 50, ...options })
  t.teardown(() => c.close())
  return c
}

// The subjects of the certificates the server saw at each HELLO, in order.
function helloSubjects (server) {
  const subjects = []
  server.on('hello', (connection) => subjects.push(connection.subject))
  return subjects
}

// Sends `count` events, one every `every` ms (callbacks counted); the server counts the ids.
function stream (c, server, count, every) {
  const seen = new Set()
  server.on('event', (event) => seen.add(event.id))
  const results = { ok: 0, failed: [] }
  let sent = 0
  const done = new Promise((resolve) => {
    const timer = setInterval(() => {
      if (sent === count) {
        clearInterval(timer)
        return
      }
      const n = sent++
      c.send(new Event('tick', { n }), (err) => {
        if (err) results.failed.push(err.code)
        else results.ok++
        if (results.ok + results.failed.length === count) resolve()
      })
    }, every)
  })
  return { seen, results, done, sent: () => sent }
}

test('key, cert and ca given as { path } are read and used; client.certificate matches crypto.X509Certificate', async (t) => {
  const { server, pki } = await startTls(t)
  const files = writeFiles(tempDir(t), pki.client, pki.caCert)
  const c = client(t, server, fileOptions(files))
  await c.connectAsync()
  const expected = new crypto.X509Certificate(pki.client.cert)
  const certificate = c.certificate
  t.deepEqual(Object.keys(certificate), ['subject', 'issuer', 'validFrom', 'validTo', 'fingerprint256'])
  t.is(certificate.subject.CN, 'device-1')
  t.deepEqual(certificate.subject, names(expected.subject))
  t.deepEqual(certificate.issuer, names(expected.issuer))
  t.is(certificate.validFrom, expected.validFrom)
  t.is(certificate.validTo, expected.validTo)
  t.is(certificate.fingerprint256, expected.fingerprint256)
  const left = c.stats().certificateExpiresIn
  t.true(Math.abs(left - (Date.parse(expected.validTo) - Date.now())) < 2000, `${left}`)
  // `ca` in the array form takes a file too.
  const mixed = client(t, server, { ...fileOptions(files), ca: [{ path: files.ca }, pki.caCert] })
  await mixed.connectAsync()
  t.is((await c.sendAsync(new Event('x', {}))).type, 'x')
})

test('without TLS there is no certificate', (t) => {
  const c = new Client({ host: 'localhost', port: 1 })
  t.is(c.certificate, null)
  t.is(c.stats().certificateExpiresIn, null)
})

test('a { path } that cannot be read throws at construction, naming the option and the path', (t) => {
  const dir = tempDir(t)
  const pki = new TestCertificateAuthority('root')
  const issued = pki.issue({ commonName: 'd', client: true })
  const files = writeFiles(dir, issued, pki.cert)
  const missing = path.join(dir, 'gone.pem')
  const err = t.throws(() => new Client({ host: '127.0.0.1', ...fileOptions(files), cert: { path: missing } }))
  t.is(err.code, 'ENOENT')
  t.true(err.message.includes('options.cert') && err.message.includes(missing), err.message)
  const bad = t.throws(() => new Client({ host: '127.0.0.1', ...fileOptions(files), key: { path: files.cert } }))
  t.is(bad.code, 'EINVALIDKEY')
  t.true(bad.message.includes(files.cert), bad.message)
  const ca = t.throws(() => new Client({ host: '127.0.0.1', ...fileOptions(files), ca: [pki.cert, { path: missing }] }))
  t.is(ca.code, 'ENOENT')
  t.is(t.throws(() => new Client({ host: '127.0.0.1', ...fileOptions(files), key: { path: '' } })).code, 'EINVALIDKEY')
  t.is(t.throws(() => new Client({ host: '127.0.0.1', ...fileOptions(files), key: { path: files.key, extra: 1 } })).code, 'EINVALIDKEY')
})

test('a file deleted later fails that attempt with its code, and the client recovers when it is back', async (t) => {
  const { server, pki } = await startTls(t)
  const files = writeFiles(tempDir(t), pki.client, pki.caCert)
  let connections = 0
  server.on('connection', () => connections++)
  const c = client(t, server, fileOptions(files))
  await c.connectAsync()
  await waitFor(() => connections === 1)
  fs.unlinkSync(files.cert)
  server.kick()
  await waitFor(() => (c.recovered.ENOENT || 0) >= 2)
  t.is(connections, 1, 'no connection was made without the certificate')
  t.false(c.stats().connected)
  replace(files.cert, pki.client.cert)
  await once(c, 'drained')
  await waitFor(() => connections === 2)
  // Without autoReconnect the failure is the client's error, as any failed attempt.
  const single = client(t, server, { ...fileOptions(files), autoReconnect: false })
  fs.unlinkSync(files.key)
  const [err] = await once(single.connect(), 'error')
  t.is(err.code, 'ENOENT')
  t.true(err.message.includes(files.key), err.message)
})

test('a certificate that expires in seconds, renewed on disk, is picked up at the next reconnect with no event lost', async (t) => {
  t.timeout(scaled(30000))
  const { server, pki } = await startTls(t)
  const subjects = helloSubjects(server)
  const expiresAt = Date.now() + 2500
  const short = pki.ca.issue({ commonName: 'device-short', client: true, notAfter: expiresAt })
  const files = writeFiles(tempDir(t), short, pki.caCert)
  const c = client(t, server, fileOptions(files))
  const warnings = []
  c.on('certificateExpiring', (certificate) => warnings.push(certificate))
  await c.connectAsync()
  t.is(warnings.length, 1, 'inside the 30 days at connect: warned once')
  t.is(warnings[0].subject.CN, 'device-short')
  const run = stream(c, server, 200, 20)
  // The certificate has expired: the gateway drops the device, which cannot connect again.
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, expiresAt + 300 - Date.now())))
  server.kick()
  await waitFor(() => (c.recovered.CERT_HAS_EXPIRED || 0) >= 2)
  t.is(c.stats().certificateExpiresIn < 0, true)
  // Provisioning renews it on disk.
  const renewed = pki.ca.issue({ commonName: 'device-renewed', client: true })
  const renewedAt = Date.now()
  replace(files.key, renewed.key)
  replace(files.cert, renewed.cert)
  await waitFor(() => subjects.some((subject) => /device-renewed/.test(subject)))
  const pickedUp = Date.now() - renewedAt
  t.log(`renewed certificate in use ${pickedUp} ms after it was written (reconnectDelay 50 ms)`)
  await run.done
  t.deepEqual(run.results, { ok: 200, failed: [] })
  await waitFor(() => run.seen.size === 200, scaled(2000)).catch(() => {})
  t.is(run.seen.size, 200, 'the server saw every event')
  t.is(c.certificate.subject.CN, 'device-renewed')
  t.true(c.stats().certificateExpiresIn > 300 * 24 * 3600 * 1000)
  t.is(warnings.length, 1, 'the renewed certificate is far from its end: no warning')
})

test('certificateExpiring fires once per certificate when certificateWarning is crossed while connected', async (t) => {
  const { server, pki } = await startTls(t)
  const issued = pki.ca.issue({ commonName: 'device-soon', client: true, notAfter: Date.now() + 63000 })
  const end = Date.parse(new crypto.X509Certificate(issued.cert).validTo)
  const c = client(t, server, { key: issued.key, cert: issued.cert, ca: pki.caCert, certificateWarning: 60000 })
  const warnings = []
  c.on('certificateExpiring', (certificate) => warnings.push({ certificate, left: end - Date.now() }))
  await c.connectAsync()
  t.true(end - Date.now() > 60000 + 200, 'connected well before the warning')
  t.is(warnings.length, 0, 'not yet inside the warning')
  await waitFor(() => warnings.length > 0)
  const { certificate, left } = warnings[0]
  t.true(left <= 60000 && left > 60000 - scaled(1000), `fired with ${left} ms left`)
  t.is(certificate.fingerprint256, new crypto.X509Certificate(issued.cert).fingerprint256)
  server.kick()
  await once(c, 'drained')
  await new Promise((resolve) => setTimeout(resolve, 100))
  t.is(warnings.length, 1, 'once per certificate, reconnects included')
  t.is(t.throws(() => new Client({ host: '127.0.0.1', key: issued.key, cert: issued.cert, certificateWarning: -1 })).code, 'ERR_INVALID_ARG_VALUE')
})

test('an expired certificate is reported as CERT_HAS_EXPIRED before connecting: the server sees no handshake', async (t) => {
  const { server, pki } = await startTls(t)
  let connections = 0
  server.on('connection', () => connections++)
  const expired = pki.ca.issue({ commonName: 'device-old', client: true, notBefore: Date.now() - 7200000, notAfter: Date.now() - 3600000 })
  const c = client(t, server, { key: expired.key, cert: expired.cert, ca: pki.caCert, autoReconnect: false })
  const [err] = await once(c.connect(), 'error')
  t.is(err.code, 'CERT_HAS_EXPIRED')
  t.regex(err.message, /expired/)
  // With reconnects, each attempt is refused the same way, and counted.
  const retrying = client(t, server, { key: expired.key, cert: expired.cert, ca: pki.caCert })
  retrying.connect()
  await waitFor(() => (retrying.recovered.CERT_HAS_EXPIRED || 0) >= 3)
  t.is(connections, 0, 'no TCP connection, no handshake')
})

test('setCredentials() with bad material throws with its code and leaves the connection untouched', async (t) => {
  const { server, pki } = await startTls(t)
  const c = client(t, server, { key: pki.client.key, cert: pki.client.cert, ca: pki.caCert })
  await c.connectAsync()
  const before = { certificate: c.certificate, stats: c.stats(), connections: server.connections().map((x) => x.id) }
  const other = pki.ca.issue({ commonName: 'device-2', client: true })
  const cases = [
    [{ key: 'nope', cert: other.cert }, 'EINVALIDKEY'],
    [{ key: other.key, cert: 'nope' }, 'EINVALIDCERT'],
    [{ key: pki.client.key, cert: other.cert }, 'EKEYMISMATCH'],
    [{ key: other.key, cert: other.cert, ca: [] }, 'EINVALIDCA'],
    [{ key: other.key, cert: { path: '/nonexistent/cert.pem' } }, 'ENOENT'],
    [{ key: other.key }, 'EINVALIDCERT']
  ]
  for (const [creds, code] of cases) {
    for (const reconnect of [false, true]) {
      const err = t.throws(() => c.setCredentials(creds, { reconnect }))
      t.is(err.code, code, JSON.stringify(Object.keys(creds)))
    }
  }
  await new Promise((resolve) => setTimeout(resolve, 100))
  t.deepEqual(c.certificate, before.certificate)
  t.is(c.stats().reconnects, before.stats.reconnects)
  t.true(c.stats().drained)
  t.deepEqual(server.connections().map((x) => x.id), before.connections)
  await c.sendAsync(new Event('still', {}))
  // A client without TLS has no credentials to set.
  const plain = new Client({ host: 'localhost', port: 1 })
  t.is(t.throws(() => plain.setCredentials({ key: other.key, cert: other.cert })).code, 'ETLSCONFIG')
})

for (const outbox of [false, true]) {
  test(`setCredentials(..., { reconnect: true }) under a stream of events${outbox ? ', with an outbox' : ''}: none lost, the server sees the new certificate`, async (t) => {
    const { server, pki } = await startTls(t)
    const subjects = helloSubjects(server)
    const options = { key: pki.client.key, cert: pki.client.cert, ca: pki.caCert, maxInFlight: 8 }
    if (outbox) options.outbox = { path: path.join(tempDir(t), 'outbox') }
    const c = client(t, server, options)
    await c.connectAsync()
    const run = stream(c, server, 300, 5)
    await waitFor(() => run.sent() >= 100)
    const next = pki.ca.issue({ commonName: 'device-next', client: true })
    c.setCredentials({ key: next.key, cert: next.cert }, { reconnect: true })
    t.is(c.certificate.subject.CN, 'device-next', 'in force from now')
    await run.done
    t.deepEqual(run.results, { ok: 300, failed: [] })
    await waitFor(() => run.seen.size === 300, scaled(2000)).catch(() => {})
    t.is(run.seen.size, 300)
    await waitFor(() => subjects.length === 2)
    t.deepEqual(subjects.map((s) => s.replace(/^.*CN=/, '')), ['device-1', 'device-next'])
    t.is(server.connections().length, 1)
    t.regex(server.connections()[0].subject, /device-next/)
    if (outbox) t.is(c.stats().outboxPending, 0)
  })
}

test('setCredentials() without reconnect applies at the next handshake; ca left out stays', async (t) => {
  const { server, pki } = await startTls(t)
  const subjects = helloSubjects(server)
  const c = client(t, server, { key: pki.client.key, cert: pki.client.cert, ca: pki.caCert })
  await c.connectAsync()
  const next = pki.ca.issue({ commonName: 'device-later', client: true })
  c.setCredentials({ key: next.key, cert: next.cert })
  await new Promise((resolve) => setTimeout(resolve, 100))
  t.is(subjects.length, 1, 'the connection in hand is kept')
  server.kick()
  await waitFor(() => subjects.length === 2)
  t.regex(subjects[1], /device-later/)
})

test('setCredentialsAsync() resolves once a connection with the new material drained; rejects on close', async (t) => {
  const { server, pki } = await startTls(t)
  const subjects = helloSubjects(server)
  const c = client(t, server, { key: pki.client.key, cert: pki.client.cert, ca: pki.caCert })
  await c.connectAsync()
  const next = pki.ca.issue({ commonName: 'device-async', client: true })
  let drained = 0
  c.on('drained', () => drained++)
  t.is(await c.setCredentialsAsync({ key: next.key, cert: next.cert }), c)
  t.is(drained, 1)
  await waitFor(() => subjects.length === 2)
  t.regex(subjects[1], /device-async/)
  // Refused material: rejected with its code.
  await t.throwsAsync(c.setCredentialsAsync({ key: 'bad', cert: next.cert }), { code: 'EINVALIDKEY' })
  // Closed before a connection with the material drained.
  const third = pki.ca.issue({ commonName: 'device-3', client: true })
  const pending = c.setCredentialsAsync({ key: third.key, cert: third.cert })
  c.close()
  await t.throwsAsync(pending, { code: 'ECLOSED' })
})

test('the Server takes { path } material, reads it again at listen(), and setCredentials() replaces it for new connections', async (t) => {
  const dir = tempDir(t)
  const first = new TestCertificateAuthority('first root')
  const second = new TestCertificateAuthority('second root')
  const serverCert = (ca) => ca.issue({ commonName: '127.0.0.1', altNames: ['127.0.0.1'], server: true })
  const device = first.issue({ commonName: 'device-1', client: true })
  const files = { key: path.join(dir, 'server.key'), cert: path.join(dir, 'server.pem'), ca: path.join(dir, 'ca.pem') }
  const s1 = serverCert(first)
  replace(files.key, s1.key)
  replace(files.cert, s1.cert)
  replace(files.ca, first.cert)
  const missing = t.throws(() => new (require('imt-gateway').Server)({ key: { path: files.key }, cert: { path: path.join(dir, 'none.pem') } }))
  t.is(missing.code, 'ENOENT')
  t.true(missing.message.includes('none.pem'))
  const server = await start(t, fileOptions(files))
  const c = client(t, server, { key: device.key, cert: device.cert, ca: first.cert })
  await c.connectAsync()
  // Bad material: refused, the old stays.
  t.is(t.throws(() => server.setCredentials({ key: s1.key, cert: 'nope' })).code, 'EINVALIDCERT')
  t.is(t.throws(() => server.setCredentials({ key: { path: path.join(dir, 'none.pem') }, cert: s1.cert })).code, 'ENOENT')
  // A server certificate from the second root; the client CA (files.ca) stays.
  const s2 = serverCert(second)
  server.setCredentials({ key: s2.key, cert: s2.cert })
  const old = client(t, server, { key: device.key, cert: device.cert, ca: first.cert, autoReconnect: false })
  const [err] = await once(old.connect(), 'error')
  t.is(err.code, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', err.message)
  const renewed = client(t, server, { key: device.key, cert: device.cert, ca: second.cert })
  await renewed.connectAsync()
  t.true(c.stats().drained, 'the connection open before kept its material')
  const plain = await start(t, {})
  t.is(t.throws(() => plain.setCredentials({ key: s2.key, cert: s2.cert })).code, 'ETLSCONFIG')
})

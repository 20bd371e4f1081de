'use strict'
// The durable outbox's files against other programs and other users: a segment truncated from
// outside (logrotate copytruncate, a cleanup job) must never kill the process (SIGBUS through
// the mapping), every send() either stores its event or throws with a code, and the events sent
// after the truncation survive a restart; the directory and files are the user's alone (0700,
// 0600 whatever the umask), and a directory that another user owns or may write is refused
// with EOUTBOXPERM. Real child processes and files.

const test = require('ava')
const fs = require('fs')
const os = require('os')
const path = require('path')
const { Client } = require('imt-gateway')
const { once } = require('./helpers/server')
const { spawnSync } = require('child_process')
const { runNode } = require('./helpers/child')

function tmpdir (t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imt-outbox-files-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

const mode = (file) => fs.statSync(file).mode & 0o7777

// A child that stores 10 events, truncates the newest segment from outside (to 0, or to the
// middle of its records: a preallocated segment ends in zeros), stores 10 more, and prints what
// each send() did and the client's counters (after close()). With `deliver`, the client is connected to a
// Server of its own after that, and the ids the Server got are printed too.
function truncatingChild (dir, { to, sync, deliver = false }) {
  return `
const fs = require('fs')
const path = require('path')
const { Client, Event, Server } = require('imt-gateway')
const dir = ${JSON.stringify(dir)}
function main (port, got) {
  const c = new Client({ host: 'localhost', port, outbox: { path: dir, sync: ${JSON.stringify(sync)} } })
  c.on('error', () => {})
  const stored = []
  const failed = []
  const send = (id) => {
    try { c.send(new Event('t', { id }, id)); stored.push(id) } catch (err) { failed.push({ id, code: err.code }) }
  }
  for (let i = 0; i < 10; i++) send('a' + i)
  const file = path.join(dir, fs.readdirSync(dir).filter((n) => n.endsWith('.seg')).sort().pop())
  const bytes = fs.readFileSync(file)
  let end = bytes.length
  while (end > 0 && bytes[end - 1] === 0) end--
  fs.truncateSync(file, ${JSON.stringify(to)} === 'zero' ? 0 : Math.floor(end / 2))
  for (let i = 0; i < 10; i++) send('b' + i)
  const report = () => console.log(JSON.stringify({ stored, failed, stats: c.stats(), got }))
  if (!got) {
    // Closing looks at the file a last time: its counters then say what was lost.
    c.close()
    report()
    return
  }
  c.connect()
  const wait = setInterval(() => {
    if (c.stats().outboxPending > 0 || got.length < stored.length) return
    clearInterval(wait)
    report()
    c.close()
    server.close()
  }, 20)
}
let server = null
if (!${deliver}) {
  main(1, null)
} else {
  server = new Server({ echo: false })
  const got = []
  server.on('event', (event) => got.push(event.id))
  server.listen(0, '127.0.0.1', () => main(server.address().port, got))
}
`
}

/** The ids a new client finds in `dir`, in order. */
async function restoredIds (t, dir) {
  const c = new Client({ host: 'localhost', port: 1, outbox: { path: dir } })
  c.on('error', () => {})
  t.teardown(() => c.close())
  const [info] = await once(c, 'restored')
  return info.ids
}

for (const sync of ['interval', 'none', 'always']) {
  for (const to of ['zero', 'middle']) {
    test(`a segment truncated from outside (to ${to}, sync '${sync}'): no signal, coded errors, nothing sent after it lost`, async (t) => {
      const dir = tmpdir(t)
      const result = await runNode(truncatingChild(dir, { to, sync }))
      t.is(result.signal, null, `the child died of ${result.signal}: ${result.err}`)
      t.is(result.code, 0, result.err)
      const { stored, failed, stats } = JSON.parse(result.out)
      for (const { id, code } of failed) t.regex(String(code), /^E[A-Z]+$/, `send(${id}) failed without a code`)
      const ids = await restoredIds(t, dir)
      // Every event stored after the truncation is found again, in order; of those before it,
      // what the truncation destroyed is gone (and counted), the rest is found.
      const after = stored.filter((id) => id.startsWith('b'))
      t.deepEqual(ids.filter((id) => id.startsWith('b')), after)
      t.deepEqual(ids, stored.filter((id) => ids.includes(id)), 'in order, nothing invented')
      const lost = stored.filter((id) => !ids.includes(id))
      t.true(failed.length === 0, JSON.stringify(failed))
      if (lost.length > 0) {
        t.true(stats.outboxDamage >= 1 && stats.outboxTruncated > 0, `lost ${lost} unreported: ${JSON.stringify(stats)}`)
      }
      t.log(`truncated to ${to}: ${ids.length} of ${stored.length} found again (lost: ${lost.join(' ') || 'none'})`)
    })
  }
}

test('events a truncation destroyed on disk are still sent from memory by the running client', async (t) => {
  const dir = tmpdir(t)
  const result = await runNode(truncatingChild(dir, { to: 'zero', sync: 'interval', deliver: true }), { timeout: 20000 })
  t.is(result.signal, null, result.err)
  t.is(result.code, 0, result.err)
  const { stored, got } = JSON.parse(result.out)
  t.is(stored.length, 20)
  t.deepEqual([...got].sort(), [...stored].sort())
  t.deepEqual(await restoredIds(t, dir), [], 'all answered: nothing left on disk')
})

test('a new outbox is private: directory 0700 and files 0600 under umask 022', async (t) => {
  const base = tmpdir(t)
  const dir = path.join(base, 'deep', 'outbox')
  const result = await runNode(`
process.umask(0o022)
const { Client, Event } = require('imt-gateway')
const c = new Client({ host: 'localhost', port: 1, outbox: { path: ${JSON.stringify(dir)} } })
c.send(new Event('t', { x: 1 }), () => {})
c.close()
`)
  t.is(result.signal, null)
  t.is(result.code, 0, result.err)
  t.is(mode(dir), 0o700)
  const files = fs.readdirSync(dir)
  t.true(files.includes('LOCK') && files.some((name) => name.endsWith('.seg')), files.join(' '))
  for (const name of files) t.is(mode(path.join(dir, name)), 0o600, name)
})

for (const bits of [0o777, 0o770]) {
  test(`an outbox directory of mode ${bits.toString(8)} is refused with EOUTBOXPERM`, (t) => {
    const dir = path.join(tmpdir(t), 'outbox')
    fs.mkdirSync(dir)
    fs.chmodSync(dir, bits)
    const err = t.throws(() => new Client({ host: 'localhost', port: 1, outbox: { path: dir } }))
    t.is(err.code, 'EOUTBOXPERM')
    t.regex(err.message, /writable by other users/)
    t.deepEqual(fs.readdirSync(dir), [], 'nothing created in it')
  })
}

const root = typeof process.getuid === 'function' && process.getuid() === 0
// chown needs root: reported as skipped otherwise, never passed without running.
;(root ? test : test.skip)('an outbox directory or file owned by another user is refused with EOUTBOXPERM', (t) => {
  const dir = path.join(tmpdir(t), 'outbox')
  fs.mkdirSync(dir, { mode: 0o700 })
  fs.chownSync(dir, 65534, 65534)
  const open = () => new Client({ host: 'localhost', port: 1, outbox: { path: dir } })
  t.is(t.throws(open).code, 'EOUTBOXPERM')
  fs.chownSync(dir, 0, 0)
  open().close()
  fs.chownSync(path.join(dir, 'LOCK'), 65534, 65534)
  t.is(t.throws(open).code, 'EOUTBOXPERM')
})

// A 256 KiB tmpfs to fill (mount needs root; decided before the tests so that a machine without
// it reports the test as skipped).
function mountSmall (dir) {
  return spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=256k,mode=0700', 'tmpfs', dir], { stdio: 'ignore' }).status === 0
}
const canMount = root && (() => {
  const probe = fs.mkdtempSync(path.join(os.tmpdir(), 'imt-outbox-mount-'))
  const mounted = mountSmall(probe)
  if (mounted) spawnSync('umount', [probe])
  fs.rmSync(probe, { recursive: true, force: true })
  return mounted
})()

;(canMount ? test : test.skip)('a full disk, then its newest segment truncated from outside: no signal, ENOSPC, what is stored is found again', async (t) => {
  const dir = path.join(tmpdir(t), 'small')
  fs.mkdirSync(dir)
  t.true(mountSmall(dir))
  t.teardown(() => spawnSync('umount', [dir]))
  const result = await runNode(`
const fs = require('fs')
const path = require('path')
const { Client, Event } = require('imt-gateway')
const dir = ${JSON.stringify(dir)}
const c = new Client({ host: 'localhost', port: 1, outbox: { path: dir, sync: 'none', segmentBytes: 64 * 1024 } })
c.on('error', () => {})
const stored = []
const failed = []
const send = (id) => {
  try { c.send(new Event('t', { blob: Buffer.alloc(3000, 1) }, id)); stored.push(id); return true } catch (err) { failed.push({ id, code: err.code }); return false }
}
for (let i = 0; i < 1000 && send('a' + i); i++);
const file = path.join(dir, fs.readdirSync(dir).filter((n) => n.endsWith('.seg')).sort().pop())
fs.truncateSync(file, 0)
for (let i = 0; i < 40; i++) send('b' + i)
c.close()
console.log(JSON.stringify({ stored, failed, stats: c.stats() }))
`)
  t.is(result.signal, null, result.err)
  t.is(result.code, 0, result.err)
  const { stored, failed, stats } = JSON.parse(result.out)
  t.is(failed[0] && failed[0].code, 'ENOSPC', JSON.stringify(failed[0]))
  for (const { id, code } of failed) t.regex(String(code), /^E[A-Z]+$/, `send(${id}) failed without a code`)
  t.true(stored.some((id) => id.startsWith('b')), 'room again after the truncation')
  const ids = await restoredIds(t, dir)
  t.deepEqual(ids.filter((id) => id.startsWith('b')), stored.filter((id) => id.startsWith('b')))
  t.deepEqual(ids, stored.filter((id) => ids.includes(id)), 'in order, nothing invented')
  const lost = stored.filter((id) => !ids.includes(id))
  if (lost.length > 0) t.true(stats.outboxDamage >= 1 && stats.outboxTruncated > 0, `lost ${lost} unreported`)
  t.log(`${stored.length} stored, ${failed.length} refused (${[...new Set(failed.map((f) => f.code))]}), ${ids.length} found again; outboxDamage ${stats.outboxDamage}`)
})

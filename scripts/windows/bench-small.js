'use strict'
// Small events and small actions per second, over mutual TLS to the bundled Server in the same
// process, with the I/O driver the environment selects (IMT_GATEWAY_IO=tokio or not). For
// platforms where bench/run.js does not run (node.exe under wine):
//
//   taskset -c 1 wine node.exe scripts/windows/bench-small.js [events] [actions]
//
// Prints one JSON line: the driver, events/s, actions/s and the process's CPU (µs, every
// thread, server included) per message.

const os = require('os')
const { Server, Client, Event } = require('imt-gateway')
const { createPki, ioDriver } = require('imt-gateway/testing')

const EVENTS = Number(process.argv[2] || 5000)
const ACTIONS = Number(process.argv[3] || 5000)
const now = () => Number(process.hrtime.bigint()) / 1e6
const cpuUs = (since, n) => { const u = process.cpuUsage(since); return Math.round((u.user + u.system) / n) }

async function main () {
  const pki = createPki()
  const server = new Server({ key: pki.server.key, cert: pki.server.cert, ca: pki.caCert, echo: false })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const client = () => new Client({ host: '127.0.0.1', port: server.address().port, key: pki.client.key, cert: pki.client.cert, ca: pki.caCert })
  const drained = (c) => new Promise((resolve, reject) => { c.once('drain', resolve); c.once('error', reject) })

  // Events: all sent at once, one in flight at a time (maxInFlight 1).
  let c = client()
  c.connect()
  await drained(c)
  let cpu = process.cpuUsage()
  let started = now()
  await new Promise((resolve, reject) => {
    let done = 0
    for (let i = 0; i < EVENTS; i++) {
      c.send(new Event('bench', { n: i }), (err) => {
        if (err) return reject(err)
        if (++done === EVENTS) resolve()
      })
    }
  })
  const events = { perSecond: Math.round(EVENTS / ((now() - started) / 1000)), cpuUs: cpuUs(cpu, EVENTS) }
  await new Promise((resolve) => { c.once('disconnect', resolve); c.close() })

  // Actions: queued for the device before it connects, each acknowledged as it arrives.
  for (let i = 0; i < ACTIONS; i++) server.queueAction(os.hostname(), { id: `a${i}`, type: 'bench', parameters: { n: i } })
  c = client()
  let seen = 0
  c.on('action', (action, ack) => { seen++; ack() })
  cpu = process.cpuUsage()
  started = now()
  c.connect()
  await drained(c)
  const actions = { perSecond: Math.round(ACTIONS / ((now() - started) / 1000)), cpuUs: cpuUs(cpu, ACTIONS) }
  if (seen !== ACTIONS) throw new Error(`expected ${ACTIONS} actions, got ${seen}`)
  c.close()
  server.destroy()
  console.log(JSON.stringify({ driver: ioDriver(), events, actions }))
}

main().catch((err) => { console.error(err); process.exit(1) })

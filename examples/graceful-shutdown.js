'use strict'
// Graceful shutdown on SIGTERM: stop producing events, wait until the gateway has acknowledged
// every event already sent, then close. A plain `client.close()` would fail the events still
// queued or in flight with ECLOSED (without an outbox they are then lost), so the wait comes
// first, bounded so that the process still stops before the service manager's kill timeout.
//
//   node examples/graceful-shutdown.js        against the gateway named by the environment:
//   IMT_GATEWAY_HOST, IMT_GATEWAY_PORT        the gateway ('localhost' is plain TCP, for a local
//                                             `new Server()`; any other host needs:)
//   IMT_GATEWAY_KEY, IMT_GATEWAY_CERT         the device's key and certificate (PEM files)
//   IMT_DEVICE_INTERVAL                       ms between events (default 1000)
//
// It prints `sent <id>` and `acknowledged <id>` for each event, and exits 0 once every event it
// sent was acknowledged, 1 if the wait ran out first.

const fs = require('fs')
const { Client, Event } = require('imt-gateway')

const env = process.env
const STOP_WAIT_MS = 10000

const client = new Client({
  host: env.IMT_GATEWAY_HOST || 'localhost',
  port: Number(env.IMT_GATEWAY_PORT || 7777),
  key: env.IMT_GATEWAY_KEY ? fs.readFileSync(env.IMT_GATEWAY_KEY) : undefined,
  cert: env.IMT_GATEWAY_CERT ? fs.readFileSync(env.IMT_GATEWAY_CERT) : undefined
})
client.on('error', (err) => console.error(`error ${err.code}: ${err.message}`))

const unacknowledged = new Set()
let failed = 0
let n = 0

function sendReading () {
  const event = new Event('reading', { n: ++n, at: Date.now() }, `reading-${process.pid}-${n}`)
  unacknowledged.add(event.id)
  console.log(`sent ${event.id}`)
  client.sendAsync(event).then(() => {
    console.log(`acknowledged ${event.id}`)
  }, (err) => {
    failed++
    console.error(`not delivered ${event.id}: ${err.code}`)
  }).finally(() => unacknowledged.delete(event.id))
}

const timer = setInterval(sendReading, Number(env.IMT_DEVICE_INTERVAL || 1000))
client.connectAsync().then(() => console.log('connected'), (err) => console.error(`connect failed: ${err.code}`))
sendReading()

process.once('SIGTERM', async () => {
  console.log(`SIGTERM: waiting for ${unacknowledged.size} acknowledgements`)
  clearInterval(timer)
  const deadline = Date.now() + STOP_WAIT_MS
  while (unacknowledged.size > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
  const lost = unacknowledged.size + failed
  // Now nothing is waiting (unless the wait ran out: those events' callbacks get ECLOSED);
  // closeAsync() resolves once the connection and its timers are gone, and the process exits.
  await client.closeAsync()
  console.log(`closed: ${n - lost} acknowledged, ${lost} not`)
  process.exitCode = lost === 0 ? 0 : 1
})

'use strict'
// A device as a long-running service: what examples/systemd/imt-gateway-device.service and
// examples/Dockerfile run. It connects with its own key and certificate, keeps every event in a
// durable outbox until the gateway acknowledges it (so nothing is lost to a restart, a crash or
// a power cut), sends a `status` event every IMT_DEVICE_INTERVAL ms, acknowledges the actions it
// receives, and stops cleanly on SIGTERM (systemd, `docker stop`) or SIGINT (Ctrl-C).
//
// Configuration, from the environment:
//   IMT_GATEWAY_HOST, IMT_GATEWAY_PORT   the gateway (default gateway.integromat.com:7777)
//   IMT_GATEWAY_KEY, IMT_GATEWAY_CERT    the device's key and certificate (PEM files); default
//                                        device.key and device.crt in $CREDENTIALS_DIRECTORY
//                                        (systemd's LoadCredential=)
//   IMT_GATEWAY_CA                       trust anchors for the gateway (PEM file); default the
//                                        platform's roots
//   IMT_GATEWAY_OUTBOX                   the outbox directory; default $STATE_DIRECTORY/outbox
//                                        (systemd's StateDirectory=), else ./outbox
//   IMT_DEVICE_INTERVAL                  ms between status events (default 60000)

const fs = require('fs')
const path = require('path')
const { Client, Event } = require('imt-gateway')

const env = process.env
const credentials = env.CREDENTIALS_DIRECTORY || '.'
const read = (file) => fs.readFileSync(file)
const outbox = env.IMT_GATEWAY_OUTBOX || path.join(env.STATE_DIRECTORY || '.', 'outbox')
const interval = Number(env.IMT_DEVICE_INTERVAL || 60000)
// How long a stop waits for the gateway to acknowledge what was sent; whatever is left stays in
// the outbox and goes first at the next start. Keep it below systemd's TimeoutStopSec= and
// Docker's stop timeout (10 s).
const STOP_WAIT_MS = 5000

const client = new Client({
  host: env.IMT_GATEWAY_HOST,
  port: env.IMT_GATEWAY_PORT ? Number(env.IMT_GATEWAY_PORT) : undefined,
  key: read(env.IMT_GATEWAY_KEY || path.join(credentials, 'device.key')),
  cert: read(env.IMT_GATEWAY_CERT || path.join(credentials, 'device.crt')),
  ca: env.IMT_GATEWAY_CA ? read(env.IMT_GATEWAY_CA) : undefined,
  reconnectDelay: 1000,
  maxReconnectDelay: 60000, // back off up to a minute while the gateway is unreachable
  outbox: { path: outbox }
})

const log = (text) => console.log(`[device] ${text}`)
client.on('restored', (info) => log(`outbox ${info.path}: ${info.events} events left by the last run, sent first`))
client.on('connect', () => log(`connected to ${client.host}:${client.port}`))
client.on('disconnect', () => log('disconnected'))
client.on('error', (err) => log(`error ${err.code}: ${err.message}`))
client.on('action', (action, ack) => {
  log(`action ${action.type} ${JSON.stringify(action.parameters)}`)
  ack()
})

let pending = 0
function sendStatus () {
  pending++
  client.send(new Event('status', { uptime: Math.round(process.uptime()), rss: process.memoryUsage().rss }), (err) => {
    pending--
    if (err) log(`status event not delivered: ${err.code}`)
  })
}

client.connect()
sendStatus()
const timer = setInterval(sendStatus, interval)

let stopping = false
async function stop (signal) {
  if (stopping) return
  stopping = true
  log(`${signal}: stopping`)
  clearInterval(timer)
  const deadline = Date.now() + STOP_WAIT_MS
  const waiting = () => pending > 0 && client.stats().connected && Date.now() < deadline
  while (waiting()) {
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  // Events still unacknowledged stay in the outbox (their callbacks get ECLOSED now).
  await client.closeAsync()
  log(`stopped (${pending} events left in the outbox)`)
}
process.on('SIGTERM', () => stop('SIGTERM'))
process.on('SIGINT', () => stop('SIGINT'))

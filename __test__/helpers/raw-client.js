'use strict'
// A deliberately small gateway peer for tests: it speaks frames by hand (6-byte header +
// MessagePack via msgpack-lite, the original client's codec), so the tests check the wire
// format independently of the Rust codec.

const net = require('net')
const tls = require('tls')
const msgpack = require('msgpack-lite')
const { scaled } = require('./time')

const TOKENS = { HELLO: 1, WELCOME: 2, BYE: 3, EVENT: 4, ACTION: 5, ACKNOWLEDGEMENT: 6, DRAINED: 7 }
const NAMES = Object.fromEntries(Object.entries(TOKENS).map(([k, v]) => [v, k]))

function frame (token, body) {
  const payload = body === undefined ? Buffer.alloc(0) : msgpack.encode(body)
  const header = Buffer.alloc(6)
  header[0] = token
  header.writeUInt32LE(payload.length, 2)
  return Buffer.concat([header, payload])
}

class RawClient {
  constructor (socket) {
    this.socket = socket
    this.buffer = Buffer.alloc(0)
    this.frames = []
    this.waiters = []
    this.ended = false
    this.closed = new Promise((resolve) => socket.once('close', resolve))
    socket.on('data', (chunk) => {
      this.buffer = Buffer.concat([this.buffer, chunk])
      while (this.buffer.length >= 6) {
        const length = this.buffer.readUInt32LE(2)
        if (this.buffer.length < 6 + length) break
        const token = this.buffer[0]
        const raw = this.buffer.subarray(6, 6 + length)
        this.buffer = this.buffer.subarray(6 + length)
        this.frames.push({ token, name: NAMES[token], body: length ? msgpack.decode(raw) : null, raw: Buffer.from(raw) })
      }
      this._wake()
    })
    socket.on('error', () => {})
    socket.on('close', () => { this.ended = true; this._wake() })
  }

  static connect ({ port, host = '127.0.0.1', tls: tlsOptions } = {}) {
    return new Promise((resolve, reject) => {
      const socket = tlsOptions
        ? tls.connect({ port, host, servername: 'localhost', ...tlsOptions }, () => resolve(new RawClient(socket)))
        : net.connect({ port, host }, () => resolve(new RawClient(socket)))
      socket.once('error', reject)
    })
  }

  _wake () {
    const waiters = this.waiters
    this.waiters = []
    for (const wake of waiters) wake()
  }

  send (token, body) {
    this.socket.write(frame(TOKENS[token] || token, body))
  }

  sendRaw (bytes) {
    this.socket.write(bytes)
  }

  hello (deviceName = 'test-device') {
    this.send('HELLO', { metadata: { device_name: deviceName } })
  }

  /** The next frame; rejects when the socket closed first or after `ms`. */
  async next (ms = scaled(5000)) {
    const deadline = Date.now() + ms
    while (!this.frames.length) {
      if (this.ended) throw new Error('connection closed')
      const left = deadline - Date.now()
      if (left <= 0) throw new Error('timed out waiting for a frame')
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left)
        this.waiters.push(() => { clearTimeout(timer); resolve() })
      })
    }
    return this.frames.shift()
  }

  /** HELLO, then WELCOME and DRAINED (acking nothing). */
  async handshake (deviceName) {
    this.hello(deviceName)
    const welcome = await this.next()
    const drained = await this.next()
    return [welcome.name, drained.name]
  }

  destroy () {
    this.socket.destroy()
  }
}

module.exports = { RawClient, frame, TOKENS }

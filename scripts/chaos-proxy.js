'use strict'
// A TCP proxy that mistreats the byte stream between a Client and a Server: it delays chunks,
// stalls, cuts connections and corrupts bytes at random points. Every decision comes from a
// seeded generator, so a run's fault schedule is reproducible from its seed.

const net = require('net')

/** xorshift32: small, seedable, good enough to place faults. */
function generator (seed) {
  let state = (seed >>> 0) || 0x9e3779b9
  const next = () => {
    state ^= state << 13
    state ^= state >>> 17
    state ^= state << 5
    return (state >>> 0) / 2 ** 32
  }
  return { next, int: (min, max) => min + Math.floor(next() * (max - min + 1)) }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Listens on 127.0.0.1 and forwards to `target` ({host, port}). Each connection draws its fate:
 * after a random number of bytes (mean `meanBytes`) it is cut, corrupted (one byte flipped) or
 * stalled for `stallMs`, by the weights in `faults`; `delayChance` of chunks wait up to
 * `maxDelayMs` first. `stats` counts what was done.
 */
function startChaosProxy ({ target, seed = 1, meanBytes = 40000, faults = { cut: 5, corrupt: 3, stall: 1 }, stallMs = 3000, delayChance = 0.05, maxDelayMs = 5 }) {
  const random = generator(seed)
  const stats = { connections: 0, cut: 0, corrupt: 0, stall: 0, bytes: 0 }
  const sockets = new Set()
  const total = faults.cut + faults.corrupt + faults.stall

  const server = net.createServer((client) => {
    stats.connections++
    const upstream = net.connect(target)
    for (const socket of [client, upstream]) {
      sockets.add(socket)
      socket.setNoDelay(true)
      socket.on('error', () => {})
      socket.on('close', () => { sockets.delete(socket); client.destroy(); upstream.destroy() })
    }
    // This connection's fate, drawn in connection order.
    const at = random.int(1, meanBytes * 2)
    const roll = random.next() * total
    const fate = roll < faults.cut ? 'cut' : roll < faults.cut + faults.corrupt ? 'corrupt' : 'stall'
    const draws = Array.from({ length: 64 }, () => random.next())
    let draw = 0
    const nextDraw = () => draws[draw++ % draws.length]
    let seen = 0
    let struck = false

    const forward = (from, to) => {
      let chain = Promise.resolve()
      from.on('data', (chunk) => {
        from.pause()
        let out = chunk
        let action = null
        if (!struck && seen + chunk.length >= at) {
          struck = true
          action = fate
          stats[fate]++
          if (fate === 'corrupt') {
            out = Buffer.from(chunk)
            out[Math.max(0, at - seen - 1)] ^= 0x5a
          }
        }
        seen += chunk.length
        stats.bytes += chunk.length
        const delay = nextDraw() < delayChance ? Math.ceil(nextDraw() * maxDelayMs) : 0
        chain = chain.then(async () => {
          if (delay) await sleep(delay)
          if (action === 'stall') await sleep(stallMs)
          if (action === 'cut') {
            client.destroy()
            upstream.destroy()
            return
          }
          if (!to.destroyed) to.write(out)
          from.resume()
        })
      })
      from.on('end', () => { chain = chain.then(() => to.end()) })
    }
    forward(client, upstream)
    forward(upstream, client)
  })

  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve({
      port: server.address().port,
      stats,
      close: () => new Promise((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      })
    }))
  })
}

module.exports = { startChaosProxy, generator }

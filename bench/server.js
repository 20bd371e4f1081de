'use strict'
// The benchmark's gateway, in its own process so that it never competes with the client
// under test for the same event loop. Driven by the parent over IPC.

const { Server } = require('imt-gateway')

let server = null

/** A string of `size` bytes of UTF-8: `ascii` one byte a character, `wide` two (as bench/floor). */
function payloadText (text, size) {
  return Buffer.alloc(size, text === 'ascii' ? 'x' : '\u0436').toString()
}

process.on('message', (message) => {
  if (message.start) {
    const { key, cert, ca } = message.start
    server = new Server({ key, cert, ca, echo: false })
    server.listen(0, '127.0.0.1', () => process.send({ port: server.address().port }))
  } else if (message.queue) {
    // Actions held for a device until it connects: delivered one per acknowledgement.
    const { device, count, size, text } = message.queue
    const data = text ? payloadText(text, size) : size ? Buffer.alloc(size, 7) : null
    for (let i = 0; i < count; i++) {
      server.queueAction(device, { id: `a${i}`, type: 'bench', parameters: data ? { data } : { n: i } })
    }
    process.send({ queued: count })
  } else if (message.stop) {
    server.destroy(() => process.exit(0))
  }
})

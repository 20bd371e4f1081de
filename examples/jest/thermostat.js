'use strict'
// A device module: a thermostat that reports its temperature as `temperature` events and takes
// `set-target` actions from the gateway. It only needs a connected `Client`, so a test can give
// it one connected to the bundled Server (thermostat.test.js).

const { Event } = require('imt-gateway')

function createThermostat (client, { target = 20 } = {}) {
  let current = target
  client.on('action', (action, ack) => {
    if (action.type !== 'set-target') return ack({ code: 'EUNKNOWNACTION', message: `Unknown action ${action.type}.` })
    const value = action.parameters && action.parameters.celsius
    if (typeof value !== 'number' || value < 5 || value > 30) {
      return ack({ code: 'ERANGE', message: 'celsius must be a number from 5 to 30.' })
    }
    target = value
    ack()
  })
  return {
    get target () { return target },
    /** Reports a reading; resolves once the gateway acknowledged it. */
    report (celsius) {
      current = celsius
      return client.sendAsync(new Event('temperature', { celsius: current, target }))
    }
  }
}

module.exports = { createThermostat }

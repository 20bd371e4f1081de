'use strict'

const { Event, Action } = require('./lib/messages')
const { Server } = require('./lib/server')

module.exports = { Event, Action, Server }

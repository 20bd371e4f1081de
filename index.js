'use strict'

const { Event, Action } = require('./lib/messages')
const { Client } = require('./lib/client')
const { Server } = require('./lib/server')

module.exports = { Client, Event, Action, Server }

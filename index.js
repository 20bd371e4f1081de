'use strict'

const { setPanicReports } = require('./lib/native')
const { enabled } = require('./lib/debug')
const { Event, Action } = require('./lib/messages')
const { Client } = require('./lib/client')
const { Server } = require('./lib/server')

// The native core reports an internal error it caught only when DEBUG asks for it.
setPanicReports(enabled('imt:gateway:native'))

module.exports = { Client, Event, Action, Server }

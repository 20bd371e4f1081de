'use strict'

// The original's value classes, field for field.

class Event {
  constructor (type, bundle, id) {
    this.type = type
    this.bundle = bundle || null
    this.id = id || null
  }
}

class Action {
  constructor (id, type, parameters) {
    this.id = id
    this.type = type
    this.parameters = parameters
  }
}

module.exports = { Event, Action }

'use strict'

// Diagnostics go through the `debug` package, as 2.x's did, under the same namespaces
// (`imt:gateway:client`, ...): DEBUG in the environment, `require('debug').enable()` at run
// time, `debug.log` to route the output, DEBUG_COLORS and the rest all work as applications
// expect. Nothing is printed unless a namespace is enabled; the original printed protocol
// errors unconditionally, we never do. Callers on a per-message path check `log.enabled`
// (a cached flag in `debug` 4) before formatting anything.

const createDebug = require('debug')

module.exports = { createDebug }

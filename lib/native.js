'use strict'

// Loads the native addon: a binary built in this checkout (`imt-gateway.<platform>.node` in the
// package root, as `npm run build` leaves it), else the platform package npm installed
// (`imt-gateway-<platform>`, one of the main package's optionalDependencies). On Linux the
// libc that was detected goes first, so an Alpine machine loads the musl build.
// IMT_GATEWAY_NATIVE_LIBRARY=/path/to/imt-gateway.<platform>.node loads that file instead (a
// build of your own, or a test of one platform's binary on another runtime).

const path = require('path')
const { candidates } = require('./platforms')
const { version } = require('../package.json')

function load () {
  const chosen = process.env.IMT_GATEWAY_NATIVE_LIBRARY
  if (chosen) {
    try {
      return require(path.resolve(chosen))
    } catch (err) {
      throw failure(`imt-gateway could not load IMT_GATEWAY_NATIVE_LIBRARY=${chosen}: ${err.message}`)
    }
  }
  const tried = []
  for (const name of candidates()) {
    const local = path.join(__dirname, '..', `imt-gateway.${name}.node`)
    const pkg = `imt-gateway-${name}`
    for (const spec of [local, pkg]) {
      try {
        if (spec === pkg) {
          const installed = require(`${pkg}/package.json`).version
          if (installed !== version) {
            tried.push(`${pkg}: version ${installed} is installed, but imt-gateway ${version} needs the same version (reinstall imt-gateway)`)
            continue
          }
        }
        return require(spec)
      } catch (err) {
        // A package or file that is not there is expected; anything else (a binary for another
        // libc, a missing symbol) is worth showing.
        const absent = err.code === 'MODULE_NOT_FOUND' && String(err.message).includes(spec === pkg ? pkg : local)
        tried.push(absent ? `${spec}: not installed` : `${spec}: ${err.message}`)
      }
    }
  }
  const where = `${process.platform}-${process.arch}`
  throw failure(tried.length === 0
    ? `imt-gateway has no native binary for ${where}. Supported platforms are listed in its README.`
    : `imt-gateway could not load its native binary for ${where}. If you installed with --no-optional or --omit=optional, or copied node_modules from another machine, reinstall imt-gateway. Tried:\n  ${tried.join('\n  ')}`)
}

function failure (message) {
  const err = new Error(message)
  err.code = 'ENATIVEBINDING'
  return err
}

module.exports = load()

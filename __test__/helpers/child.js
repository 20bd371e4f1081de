'use strict'
// Runs Node code in a child process from the package root (so `require('imt-gateway')` resolves
// to this package) and reports how it ended.

const { spawn } = require('child_process')
const path = require('path')
const { scaled } = require('./time')

/**
 * Starts Node code; `ended` resolves to `{code, signal, out, err, ms}`; the child is killed after
 * `timeout` ms. `until(out)` may end it early (SIGTERM) once its output shows what the test
 * waits for. DEBUG is not passed on unless `env` sets it.
 */
function startNode (source, { env = {}, timeout = 10000, until, node = [] } = {}) {
  const started = Date.now()
  const childEnv = { ...process.env, ...env }
  if (!('DEBUG' in env)) delete childEnv.DEBUG
  const child = spawn(process.execPath, [...node, '-e', source], { cwd: path.join(__dirname, '..', '..'), env: childEnv })
  let out = ''
  let err = ''
  child.stdout.on('data', (d) => {
    out += d
    if (until && until(out)) child.kill('SIGTERM')
  })
  child.stderr.on('data', (d) => { err += d })
  const timer = setTimeout(() => child.kill('SIGKILL'), scaled(timeout))
  // 'close', not 'exit': only then has all of the child's output been read.
  const ended = new Promise((resolve) => child.on('close', (code, signal) => {
    clearTimeout(timer)
    resolve({ code, signal, out, err, ms: Date.now() - started })
  }))
  return { child, ended }
}

/** Runs Node code to its end: `startNode(...).ended`. */
function runNode (source, options) {
  return startNode(source, options).ended
}

module.exports = { runNode, startNode }

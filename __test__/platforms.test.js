'use strict'

// Which binary the package loads, and the platform packages that carry them.
const test = require('ava')
const fs = require('fs')
const path = require('path')
const { execFileSync } = require('child_process')
const { PLATFORMS, candidates } = require('../lib/platforms')
const root = require('../package.json')

test('the loader prefers the detected libc on Linux and offers the other one second', (t) => {
  t.deepEqual(candidates('linux', 'x64', false), ['linux-x64-gnu', 'linux-x64-musl'])
  t.deepEqual(candidates('linux', 'x64', true), ['linux-x64-musl', 'linux-x64-gnu'])
  t.deepEqual(candidates('linux', 'arm64', true), ['linux-arm64-musl', 'linux-arm64-gnu'])
  t.deepEqual(candidates('linux', 'arm', false), ['linux-arm-gnueabihf'])
  t.deepEqual(candidates('darwin', 'arm64', false), ['darwin-arm64'])
  t.deepEqual(candidates('win32', 'x64', false), ['win32-x64-msvc', 'win32-x64-gnu'])
  t.deepEqual(candidates('freebsd', 'x64', false), [])
})

test('this machine\'s libc is detected', (t) => {
  if (process.platform !== 'linux') return t.is(PLATFORMS[candidates()[0]].os, process.platform)
  const glibc = Boolean(process.report.getReport().header.glibcVersionRuntime)
  t.is(PLATFORMS[candidates()[0]].libc, glibc ? 'glibc' : 'musl')
})

test('every published platform package says what the loader and npm need, at the main package\'s version', (t) => {
  for (const [name, p] of Object.entries(PLATFORMS)) {
    if (p.publish === false) continue
    const dir = path.join(__dirname, '..', 'npm', name)
    const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'))
    t.is(manifest.name, `imt-gateway-${name}`)
    t.is(manifest.version, root.version, `${name} is at the main package's version`)
    t.deepEqual(manifest.os, [p.os])
    t.deepEqual(manifest.cpu, [p.cpu])
    t.deepEqual(manifest.libc, p.libc ? [p.libc] : undefined)
    t.is(manifest.main, `imt-gateway.${name}.node`)
    t.deepEqual(manifest.files, [manifest.main])
    t.is(manifest.license, 'MIT')
    t.true(fs.existsSync(path.join(dir, 'LICENSE')), `${name} has a LICENSE`)
  }
})

function loadIn (env, prelude = '') {
  try {
    return { out: execFileSync(process.execPath, ['-e', `${prelude}; require(${JSON.stringify(path.join(__dirname, '..'))}); console.log('loaded')`], { env: { ...process.env, ...env }, encoding: 'utf8', stdio: 'pipe' }) }
  } catch (err) {
    return { err: err.stderr }
  }
}

test('without a binary for the machine, require() fails with ENATIVEBINDING and says why', (t) => {
  // No package is built for s390x on any OS: the message names this OS with that CPU.
  t.deepEqual(candidates(process.platform, 's390x', false), [])
  const { err } = loadIn({}, "Object.defineProperty(process, 'arch', { value: 's390x' })")
  t.regex(err, /ENATIVEBINDING/)
  t.true(err.includes(`no native binary for ${process.platform}-s390x.`), err)
})

test('IMT_GATEWAY_NATIVE_LIBRARY names the binary to load, and a wrong one fails clearly', (t) => {
  const { err } = loadIn({ IMT_GATEWAY_NATIVE_LIBRARY: '/nonexistent/imt-gateway.node' })
  t.regex(err, /ENATIVEBINDING/)
  t.regex(err, /could not load IMT_GATEWAY_NATIVE_LIBRARY=\/nonexistent\/imt-gateway.node/)
  const here = path.join(__dirname, '..', `imt-gateway.${candidates()[0]}.node`)
  t.regex(loadIn({ IMT_GATEWAY_NATIVE_LIBRARY: here }).out || '', /loaded/)
})

'use strict'

// One table of option defaults (src/defaults.rs): the native side exports it, lib/client.js and
// lib/server.js fill in from it, and index.d.ts (`@default`) and docs/client.md state it. These tests
// keep the documentation and the table from drifting apart.

const test = require('ava')
const fs = require('fs')
const path = require('path')
const ts = require('typescript')
const { Client } = require('imt-gateway')
const { optionDefaults } = require('../lib/native')
const { createPki } = require('imt-gateway/testing')

const table = optionDefaults()

// The `@default` of each property of `interface name` in index.d.ts: a literal's value, or
// `{ sameAs }` when it names another option.
function documentedDefaults (name) {
  const file = path.join(__dirname, '..', 'index.d.ts')
  const source = ts.createSourceFile(file, fs.readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true)
  const found = source.statements.find((s) => ts.isInterfaceDeclaration(s) && s.name.text === name)
  if (!found) throw new Error(`index.d.ts has no interface ${name}`)
  const defaults = {}
  for (const member of found.members) {
    const tag = ts.getJSDocTags(member).find((t) => t.tagName.text === 'default')
    if (!tag) continue
    const text = ts.getTextOfJSDocComment(tag.comment).trim()
    defaults[member.name.text] = /^[A-Za-z_$][\w$]*$/.test(text) && text !== 'true' && text !== 'false'
      ? { sameAs: text }
      : JSON.parse(text.replace(/^'(.*)'$/, '"$1"'))
  }
  return { defaults, members: found.members.map((m) => m.name.text) }
}

for (const [iface, side] of [['ClientOptions', 'client'], ['ServerOptions', 'server'], ['OutboxOptions', 'outbox']]) {
  test(`every @default of ${iface} in index.d.ts is the native table's, and every default is documented`, (t) => {
    const { defaults, members } = documentedDefaults(iface)
    const native = table[side]
    for (const [option, value] of Object.entries(defaults)) {
      if (value !== null && typeof value === 'object') {
        // A default that is another option's value has no entry of its own.
        t.true(members.includes(value.sameAs), `${option}: @default ${value.sameAs} names no option`)
        t.false(option in native, `${option}: documented as ${value.sameAs}, but the table has ${native[option]}`)
      } else {
        t.is(native[option], value, `${option}: index.d.ts says ${JSON.stringify(value)}`)
      }
    }
    for (const option of Object.keys(native)) {
      t.true(option in defaults, `${option}: the table's default ${native[option]} is not documented in index.d.ts`)
      t.true(members.includes(option), `${option}: not an option of ${iface}`)
    }
  })
}

// The client guide's table of options (docs/client.md): each option's default as a literal, where
// the row gives one.
function readmeDefaults () {
  const readme = fs.readFileSync(path.join(__dirname, '..', 'docs', 'client.md'), 'utf8').split('\n')
  const start = readme.indexOf('| option | meaning | default |')
  const defaults = {}
  for (const line of readme.slice(start + 2)) {
    if (!line.startsWith('|')) break
    const cells = line.split(' | ')
    const names = [...cells[0].matchAll(/`(\w+)`/g)].map((m) => m[1])
    const values = cells[cells.length - 1].replace(/ \|$/, '').split(', ')
    names.forEach((name, i) => {
      const literal = /^`([^`]+)`/.exec(values[i] || '')
      if (literal) defaults[name] = literal[1]
    })
  }
  return defaults
}

test('docs/client.md states the table\'s default of every client option', (t) => {
  const stated = readmeDefaults()
  for (const [option, value] of Object.entries(table.client)) {
    t.true(option in stated, `${option}: docs/client.md's table gives no default`)
    if (option in stated) t.is(JSON.parse(stated[option].replace(/^'(.*)'$/, '"$1"')), value, `${option}: docs/client.md says ${stated[option]}`)
  }
})

test('a Client left without host and port takes the table\'s', (t) => {
  const pki = createPki()
  const client = new Client({ key: pki.client.key, cert: pki.client.cert })
  t.is(client.host, table.client.host)
  t.is(client.port, table.client.port)
  t.is(new Client({ host: 'localhost', port: null }).port, table.client.port)
})

test('the imt-gateway command takes its default ports from the table, and its help states them', (t) => {
  const bin = path.join(__dirname, '..', 'bin', 'imt-gateway.js')
  const source = fs.readFileSync(bin, 'utf8')
  for (const port of new Set([table.client.port, table.server.port])) {
    t.false(new RegExp(`\\b${port}\\b`).test(source), `bin/imt-gateway.js has its own copy of the port ${port}`)
  }
  const { execFileSync } = require('child_process')
  const help = (command) => execFileSync(process.execPath, [bin, command, '--help'], { encoding: 'utf8' })
  t.true(help('send').includes(`gateway port (default ${table.client.port})`))
  t.true(help('server').includes(`0 picks a free one (default ${table.server.port})`))
  t.true(help('server').includes(`[--port ${table.server.port}]`))
})

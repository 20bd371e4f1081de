'use strict'
// Code written for the original 2.x package, run unchanged: its test-server idiom on port 7777
// and the README's quick example. Serial, because both need port 7777.

const test = require('ava')
const fs = require('fs')
const path = require('path')
const { Server } = require('imt-gateway')
const { RawClient } = require('./helpers/raw-client')
const { runNode } = require('./helpers/child')

test.serial('the original usage works: new Server().listen(cb) on port 7777, destroy(cb)', async (t) => {
  const server = new Server()
  await new Promise((resolve) => server.listen(resolve))
  t.is(server.address().port, 7777)
  const client = await RawClient.connect({ port: 7777, host: 'localhost' })
  t.deepEqual(await client.handshake(), ['WELCOME', 'DRAINED'])
  await new Promise((resolve) => server.destroy(resolve))
  await client.closed
  t.true(client.ended, 'destroy() closed the connection')
  t.is(server.address(), null, 'and stopped listening')
})

test.serial("the README's quick example runs unchanged against new Server().listen()", async (t) => {
  const readme = fs.readFileSync(path.join(__dirname, '..', 'README.md'), 'utf8')
  const section = readme.slice(readme.indexOf('## Quick example'))
  const example = /```js\n([\s\S]*?)```/.exec(section)[1]
  t.regex(example, /client\.on\('drained'/)

  const server = new Server()
  t.teardown(() => new Promise((resolve) => server.destroy(resolve)))
  await new Promise((resolve) => server.listen(resolve))
  const events = []
  server.on('event', (event) => events.push(event))
  const result = await runNode(example, {
    until: (out) => out.includes('event acknowledged') && out.includes('action hello')
  })
  t.regex(result.out, /event acknowledged/)
  t.regex(result.out, /action hello \{ from: 'readme' \}/)
  t.is(result.err, '')
  t.is(events.length, 1)
  t.deepEqual(events[0].bundle, { from: 'readme' })
})

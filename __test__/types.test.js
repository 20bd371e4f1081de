'use strict'

const test = require('ava')
const path = require('path')
const { execFileSync } = require('child_process')

test('index.d.ts type-checks a typed usage example (tsc --noEmit)', (t) => {
  const tsc = require.resolve('typescript/bin/tsc')
  const project = path.join(__dirname, 'typings', 'tsconfig.json')
  try {
    execFileSync(process.execPath, [tsc, '-p', project], { encoding: 'utf8' })
    t.pass()
  } catch (err) {
    t.fail(`tsc reported:\n${err.stdout}${err.stderr}`)
  }
})

'use strict'

const test = require('ava')
const path = require('path')
const { promisify } = require('util')
const execFile = promisify(require('child_process').execFile)

async function typecheck (t, config) {
  const tsc = require.resolve('typescript/bin/tsc')
  const project = path.join(__dirname, 'typings', config)
  try {
    await execFile(process.execPath, [tsc, '-p', project], { encoding: 'utf8' })
    t.pass()
  } catch (err) {
    t.fail(`tsc reported:\n${err.stdout}${err.stderr}`)
  }
}

test('index.d.ts type-checks a typed usage example (tsc --noEmit)', typecheck, 'tsconfig.json')

// The ES module imports (typings/esm.mts) through the `import` condition: index.d.mts, testing.d.mts.
for (const mode of ['node16', 'nodenext', 'bundler']) {
  test(`the ES module imports type-check under ${mode === 'bundler' ? 'moduleResolution' : 'module'} ${mode}`, typecheck, `tsconfig.${mode}.json`)
}

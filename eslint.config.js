'use strict'
// `npm run lint` (and CI's lint step): neostandard, standard's rules for ESLint 9, over every
// JavaScript file of the package (index, lib/, bin/), its tests, scripts, examples and benchmarks.
const neostandard = require('neostandard')

module.exports = [
  ...neostandard({
    ignores: ['target/**', 'fuzz/**', 'npm/**', 'node_modules/**']
  }),
  {
    // Being rewritten on another branch (the outbox's): drop this once that has landed.
    files: ['__test__/outbox.test.js'],
    rules: { 'no-return-assign': 'off' }
  }
]

'use strict'
// `npm run lint` (and CI's lint step): neostandard, standard's rules for ESLint 9, over every
// JavaScript file of the package (index, lib/, bin/), its tests, scripts, examples and benchmarks.
const neostandard = require('neostandard')

module.exports = [
  ...neostandard({
    ignores: ['target/**', 'fuzz/**', 'npm/**', 'node_modules/**', 'docs/api/**']
  })
]

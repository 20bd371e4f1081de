// Type definitions for `import ... from 'imt-gateway/testing'`.
import * as testing from './testing.js'

export * from './testing.js'
export default testing

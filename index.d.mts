// Type definitions for `import ... from 'imt-gateway'`: the CommonJS declarations, re-exported.
import * as gateway from './index.js'

export * from './index.js'
export default gateway

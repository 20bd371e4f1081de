'use strict'
// Time limits in the tests are for this machine. IMT_TEST_TIME_SCALE stretches every one of them
// where the same work takes longer: under qemu-user (about 10x) or wine (round trips of ~4 ms).
const SCALE = Number(process.env.IMT_TEST_TIME_SCALE) || 1

/** `ms`, stretched by IMT_TEST_TIME_SCALE. */
function scaled (ms) {
  return ms * SCALE
}

module.exports = { scaled }

//go:build pgferry_noinline

package router

// inlineRelay is off in this build (pgferry_noinline; see
// trick_inline_on.go).
const inlineRelay = false

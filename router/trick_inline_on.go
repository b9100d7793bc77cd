//go:build !pgferry_noinline

package router

// inlineRelay: in transaction mode the session goroutine relays the
// server's answers itself (inline.go). The build tag pgferry_noinline
// switches it off for diagnosis: a pump goroutine then relays every loan.
const inlineRelay = true

//go:build !pgferry_nolooplogin

package router

// loopLoginsOn: with the relay loop on, plain clients log in on it
// (looplogin_linux.go). The build tag pgferry_nolooplogin switches it off
// for diagnosis: every login then runs on a goroutine.
const loopLoginsOn = true

//go:build pgferry_nolooplogin

package router

// loopLoginsOn: off in this build (see trick_looplogin_on.go).
const loopLoginsOn = false

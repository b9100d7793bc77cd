//go:build !linux || 386 || pgferry_nosockio

package router

// DialsDetached reports false, false: servers are never detached here
// (sockio.FDConn is Linux's).
func DialsDetached(*Server, string, string) (detached, ok bool) { return false, false }

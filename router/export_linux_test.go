//go:build linux && !386 && !pgferry_nosockio

package router

import "github.com/pgferry/pgferry/internal/sockio"

// DialsDetached reports whether the pool of db and user holds its servers
// out of Go's netpoller (see detachedServers), by the kind of one of its
// idle plain server connections (sockio.FDConn), which it borrows for a
// moment; ok is false when there is no such pool or no idle server in it.
func DialsDetached(s *Server, db, user string) (detached, ok bool) {
	s.mu.Lock()
	e, ok := s.pools[poolKey{db, user}]
	s.mu.Unlock()
	if !ok {
		return false, false
	}
	sc := e.pool.TryAcquireChecked(0)
	if sc == nil {
		return false, false
	}
	defer e.pool.Release(sc)
	_, detached = sc.Conn.(*sockio.FDConn)
	return detached, true
}

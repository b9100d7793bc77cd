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
	sc := e.pool.TryAcquireChecked()
	if sc == nil {
		return false, false
	}
	defer e.pool.Release(sc)
	_, detached = sc.Conn.(*sockio.FDConn)
	return detached, true
}

// ListenerWaitersOpen counts the TCP listeners whose duplicate for the
// accept goroutine's wait is open (rawListener.f).
func ListenerWaitersOpen(s *Server) int {
	s.mu.Lock()
	ls := s.listeners
	s.mu.Unlock()
	n := 0
	for _, l := range ls {
		if rl, ok := l.(*rawListener); ok {
			rl.mu.Lock()
			if rl.f != nil {
				n++
			}
			rl.mu.Unlock()
		}
	}
	return n
}

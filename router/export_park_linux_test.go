//go:build linux && !pgferry_nopark

package router

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

// SetLoopTurnFault makes the relay loop call f at the start of every turn
// of a logged-in session of s, with the session's application_name and the
// clock reading of the epoll wait whose event it serves (two turns of one
// wait get the same), until undo is called. f may panic (the turn panics)
// or block (the loop waits). It replaces any fault set before for s
// (SetFaultFor).
func SetLoopTurnFault(s *Server, f func(app string, wait int64)) (undo func()) {
	return setFaultFor(s, func(ss *session, where string) {
		if where == "turn" {
			f(ss.params.get("application_name"), int64(ss.srv.parker.turnNow))
		}
	})
}

// SetLoopHandbackFault makes the goroutine the relay loop hands a session
// or a login of s to call f, with the session's application_name ("" for a
// login) and where it stands: "evict" once its client socket is a
// net.Conn again, "evict flush" as it flushes what the loop wrote to the
// linked server, "leave" before it ends the session, "login" before the
// login goes on. f may panic. undo stops it. It replaces any fault set
// before for s (SetFaultFor).
func SetLoopHandbackFault(s *Server, f func(app, where string)) (undo func()) {
	return setFaultFor(s, func(ss *session, where string) {
		switch where {
		case "evicting", "evict", "evict flush", "leave", "login":
			f(ss.params.get("application_name"), where)
		}
	})
}

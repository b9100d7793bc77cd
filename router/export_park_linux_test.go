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

// PanicInLoopTurns makes every turn of the relay loop for a session with
// application_name app panic, until undo is called.
func PanicInLoopTurns(app string) (undo func()) {
	f := func(ss *session) {
		if ss.params.get("application_name") == app {
			panic("a fault injected into the turns of " + app)
		}
	}
	turnFault.Store(&f)
	return func() { turnFault.Store(nil) }
}

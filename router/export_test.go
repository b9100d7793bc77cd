package router

import "github.com/pgferry/pgferry/internal/sockio"

// RelayLoopBuilt reports whether this build can serve sessions in the
// relay loop (relay_loop turns it on).
const RelayLoopBuilt = loopBuilt && inlineRelay && sockio.Available

// ParkedWithoutConn counts parked sessions that let go of their net.Conn
// and wait as a bare descriptor (see detach).
func ParkedWithoutConn(s *Server) int {
	n := 0
	s.eachSession(func(ss *session) {
		if ss.has(stParked) && ss.rawConn() == nil {
			n++
		}
	})
	return n
}

// LoopQueueings counts the waits for a server the relay loop made, and
// LoopGrantNudges the grants that woke it from epoll.
func LoopQueueings(s *Server) uint64   { return s.parker.queueings.Load() }
func LoopGrantNudges(s *Server) uint64 { return s.parker.grantNudges.Load() }

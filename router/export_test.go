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

// LoopQueueings counts the waits for a server the relay loop made,
// LoopQueuedReads its reads of what queued clients sent meanwhile,
// LoopNudgeWakes the times its nudge pipe woke it (a grant, or a login
// to an empty young list), and LoopServerAdds the server sockets it added
// to its epoll set.
func LoopQueueings(s *Server) uint64   { return s.parker.queueings.Load() }
func LoopQueuedReads(s *Server) uint64 { return s.parker.queuedReads.Load() }
func LoopNudgeWakes(s *Server) uint64  { return s.parker.nudgeWakes.Load() }
func LoopServerAdds(s *Server) uint64  { return s.parker.serverAdds.Load() }

// LoopLogins counts the logins the relay loop saw through, and
// LoginHandoffs those it handed to a goroutine before answering them.
func LoopLogins(s *Server) uint64    { return s.parker.loopLoginsDone.Load() }
func LoginHandoffs(s *Server) uint64 { return s.parker.loginHandoffs.Load() }

// LoopAccepts counts the clients the relay loop accepted itself.
func LoopAccepts(s *Server) uint64 { return s.parker.loopAccepts.Load() }

// Clients counts the clients connected, logged in or not.
func Clients(s *Server) int64 { return s.clients.Load() }

// SetFault makes every session call f at each point it passes faultAt
// (see there for the names of where), with its application_name ("" for
// a login), until undo is called. f may panic, as a bug there would, or
// block. It replaces any fault set before (SetLoopTurnFault,
// SetLoopHandbackFault): one is set at a time.
func SetFault(f func(app, where string)) (undo func()) {
	return setFault(func(ss *session, where string) { f(ss.params.get("application_name"), where) })
}

// setFault makes g the fault faultAt runs, until undo is called.
func setFault(g func(ss *session, where string)) (undo func()) {
	fault.Store(&g)
	return func() { fault.Store(nil) }
}

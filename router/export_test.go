package router

import (
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgferry/pgferry/internal/sockio"
)

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

// LoopSettles counts the idle sessions of the relay loop its sweep parked:
// the loop adopts each at its next request and counts an entry again
// (LoopEntries), with no hand-back in between.
func LoopSettles(s *Server) uint64 { return s.parker.settles.Load() }

// LoopLogins counts the logins the relay loop saw through, and
// LoginHandoffs those it handed to a goroutine before answering them.
func LoopLogins(s *Server) uint64    { return s.parker.loopLoginsDone.Load() }
func LoginHandoffs(s *Server) uint64 { return s.parker.loginHandoffs.Load() }

// LoopAccepts counts the clients the relay loop accepted itself.
func LoopAccepts(s *Server) uint64 { return s.parker.loopAccepts.Load() }

// ForwardCancel delivers to s a CancelRequest with key pid, key, as the
// goroutine of a client's cancel connection does, on the calling
// goroutine (a fault may send one where a client's would have to wait for
// the relay loop the fault holds).
func ForwardCancel(s *Server, pid, key uint32) { s.forwardCancel(pid, key) }

// Clients counts the clients connected, logged in or not.
func Clients(s *Server) int64 { return s.clients.Load() }

// SetFault makes every session call f at each point it passes faultAt
// (see there for the names of where), with its application_name ("" for
// a login), until undo is called. f may panic, as a bug there would, or
// block. It replaces any fault set before for every server: one is set at
// a time. Only a test that runs alone (no t.Parallel) may set it; a
// parallel test sets one for its own server (SetFaultFor).
func SetFault(f func(app, where string)) (undo func()) {
	return setFault(func(ss *session, where string) { f(ss.params.get("application_name"), where) })
}

// SetFaultFor is SetFault for the sessions of s only. It replaces any
// fault set before for s (SetLoopTurnFault, SetLoopHandbackFault): one is
// set at a time for a server. Faults set for other servers run alongside,
// each for its own server's sessions, so tests that set one on a server of
// their own may run in parallel.
func SetFaultFor(s *Server, f func(app, where string)) (undo func()) {
	return setFaultFor(s, func(ss *session, where string) { f(ss.params.get("application_name"), where) })
}

// setFault makes g the fault every server's sessions run, besides the one
// set for their server if any, until undo is called.
func setFault(g func(ss *session, where string)) (undo func()) {
	return setFaultFor(nil, g)
}

// faultsBy holds the faults set, by the server whose sessions run them
// (nil: every server's), in a map replaced whole on each change, so that
// runFaults reads it without a lock; fault holds runFaults while the map
// is not empty. faultsMu serializes the changes.
var (
	faultsMu sync.Mutex
	faultsBy atomic.Pointer[map[*Server]*faultFunc]
)

// faultFunc is a fault as faultAt runs it.
type faultFunc = func(ss *session, where string)

// setFaultFor makes g the fault the sessions of s run (of every server for
// a nil s), until undo is called; undo may be called more than once.
func setFaultFor(s *Server, g faultFunc) (undo func()) {
	change := func(edit func(m map[*Server]*faultFunc)) {
		faultsMu.Lock()
		defer faultsMu.Unlock()
		m := make(map[*Server]*faultFunc)
		if old := faultsBy.Load(); old != nil {
			maps.Copy(m, *old)
		}
		edit(m)
		faultsBy.Store(&m)
		if len(m) == 0 {
			fault.Store(nil)
		} else if fault.Load() == nil {
			run := runFaults
			fault.Store(&run)
		}
	}
	change(func(m map[*Server]*faultFunc) { m[s] = &g })
	return func() {
		change(func(m map[*Server]*faultFunc) {
			if m[s] == &g {
				delete(m, s)
			}
		})
	}
}

// runFaults runs the fault set for every server and the one set for the
// session's server, if any.
func runFaults(ss *session, where string) {
	m := faultsBy.Load()
	if m == nil {
		return
	}
	if g := (*m)[nil]; g != nil {
		(*g)(ss, where)
	}
	if g := (*m)[ss.srv]; g != nil {
		(*g)(ss, where)
	}
}

// SetAuthDelayCap raises (or lowers) the longest delay s's auth failure
// throttle makes a client wait, 5 s otherwise, so that a test can tell a
// wait cut short from one that ran out.
func SetAuthDelayCap(s *Server, d time.Duration) {
	s.throttle.mu.Lock()
	s.throttle.most = d
	s.throttle.mu.Unlock()
}

// Logins counts the clients logging in that a kill reaches (loginkill.go).
func Logins(s *Server) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.logins)
}

// Kills that reach clients still logging in: the admin console's KILL and
// KILL_CLIENT, and shutdown's deadline. A login is listed (Server.logins)
// from its startup packet, which names its user and database, until it
// becomes a session (register) or ends; a kill then ends it at once
// wherever it is: reading the client (the kill's past deadline on its
// socket, or on the relay loop the kill's resume: loginStop), or waiting
// (loginContext: a pool's first server, a check of its startup values and
// its round trip, auth_query's lookup, an Entra token's validation, the
// auth failure throttle's delay).

package router

import (
	"cmp"
	"context"
	"slices"
	"time"
)

// registerLogin lists a client logging in whose startup packet named its
// user and database (written before: readers of the list see them), for
// the kills and SHOW CLIENTS. Admin console logins are not listed, as
// kills spare the console's sessions.
func (s *Server) registerLogin(ss *session) {
	s.mu.Lock()
	s.logins[ss.id] = ss
	s.mu.Unlock()
}

// unregisterLogin takes a login that ended off the list (register moves
// one that became a session). Safe for a login never listed.
func (s *Server) unregisterLogin(ss *session) {
	s.mu.Lock()
	delete(s.logins, ss.id)
	s.mu.Unlock()
}

// loginsLocked copies the listed logins, sorted by id; mu is held.
func (s *Server) loginsLocked() []*session {
	out := make([]*session, 0, len(s.logins))
	for _, ss := range s.logins {
		out = append(out, ss)
	}
	slices.SortFunc(out, func(a, b *session) int { return cmp.Compare(a.id, b.id) })
	return out
}

// clientLists copies the registered sessions and the listed logins at once
// (a client is in one or the other), each sorted by id.
func (s *Server) clientLists() (sessions, logins []*session) {
	s.mu.Lock()
	sessions = make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		sessions = append(sessions, ss)
	}
	logins = s.loginsLocked()
	s.mu.Unlock()
	slices.SortFunc(sessions, func(a, b *session) int { return cmp.Compare(a.id, b.id) })
	return sessions, logins
}

// clientByID returns the registered session or listed login id, or nil.
func (s *Server) clientByID(id uint64) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return cmp.Or(s.sessions[id], s.logins[id])
}

// loginContext bounds a wait of a client logging in by d (none when d is
// 0), shutdown's deadline (Server.cut) and a kill, which cancels it
// (rareState.loginStop). The caller calls the CancelFunc when the wait is
// over.
func (ss *session) loginContext(d time.Duration) (context.Context, context.CancelFunc) {
	var ctx context.Context
	var cancel context.CancelFunc
	if d > 0 {
		ctx, cancel = context.WithTimeout(ss.srv.cut, d)
	} else {
		ctx, cancel = context.WithCancel(ss.srv.cut)
	}
	r := ss.ensureRare()
	ss.mu.Lock()
	r.loginStop = cancel
	ss.mu.Unlock()
	if ss.has(evKill) {
		cancel() // (killed before loginStop was set)
	}
	return ctx, func() {
		ss.mu.Lock()
		r.loginStop = nil
		ss.mu.Unlock()
		cancel()
	}
}

// loginKilled returns the kill's FATAL for a login that failed with err,
// if it was killed and err would not tell the client more (see
// toldKilled), and err otherwise.
func (ss *session) loginKilled(err error) error {
	if ss.killed() == nil {
		return err
	}
	return ss.toldKilled(err)
}

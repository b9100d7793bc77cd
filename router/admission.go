// Admitting a new client: allow_cidrs, max_client_conn and the refusal
// they decide on (admit, logIn, refusal), before its login and the
// session's goroutine (serveClient, serveAdmitted).

package router

import (
	"net"
	"time"

	"github.com/pgferry/pgferry/protocol"
)

// serveClient runs a new client's login on the accepting goroutine, then
// the session. A TLS session continues on a fresh goroutine instead: the
// handshake leaves a stack several times deeper than the relay needs,
// which thousands of idle sessions would otherwise keep until they park.
// (A plain login fits in the stack growStack gives every session, so
// another goroutine would only cost a spawn, a wake-up and a second
// growth.) Whichever goroutine holds the connection last closes it and
// releases its client count and WaitGroup slot.
func (s *Server) serveClient(raw net.Conn) {
	s.serveAdmitted(s.admit(raw))
}

// serveAdmitted serves a session whose login succeeded (nil: none).
func (s *Server) serveAdmitted(ss *session) {
	if ss == nil {
		return
	}
	if ss.tls {
		go func() {
			growStack()
			ss.serveLoggedIn()
		}()
		return
	}
	// Outside admit's frame: a panic from here on is the session's, as on
	// the TLS path and after a resume, not one admit would swallow after
	// handing the connection over.
	ss.serveLoggedIn()
}

// admit checks a new client against allow_cidrs and max_client_conn and
// runs its login. It returns the logged-in session, which then owns the
// connection, the client count and the WaitGroup slot taken at accept; on
// nil it has released them.
func (s *Server) admit(raw net.Conn) *session {
	return s.admitSession(s.newSession(raw))
}

// newSession is the session of a client just accepted on raw, before its
// login.
func (s *Server) newSession(raw net.Conn) *session {
	return &session{
		srv:         s,
		id:          s.ids.Add(1),
		raw:         raw,
		conn:        raw,
		peer:        raw.RemoteAddr(),
		connectedAt: monoNow(),
		status:      protocol.TxIdle,
		handshake:   handshakes.Get().(*loginState),
		slot:        -1,
	}
}

// admitSession is admit for a session newSession made; it returns ss when
// the login succeeded, and nil otherwise. (Split from admit so that a test
// can look at a session whose login failed: its TLS keys must be wiped.)
func (s *Server) admitSession(ss *session) *session {
	return s.logIn(ss, s.clients.Add(1), true)
}

// logIn is admitSession for a client counted already, the nth; screen
// says whether it is checked against allow_cidrs and max_client_conn
// (a login the relay loop hands over was, at accept).
func (s *Server) logIn(ss *session, n int64, screen bool) (logged *session) {
	raw := ss.raw
	defer func() {
		if logged == nil {
			s.unregisterLogin(ss)
			ss.dropHandshake()
			if !ss.handedOff {
				raw.Close()
			}
			ss.wipeTLS()
			s.clients.Add(-1)
			s.wg.Done()
		}
	}()
	defer ss.recoverPanic() // logged stays nil: the connection is released
	cfg := s.cfg.Load()
	switch {
	case !screen:
		growStack()
	case !s.allowed(ss.peer):
		s.reject("allow_cidrs")
		ss.logger().Info("client refused by allow_cidrs")
		ss.handshake.refusal = &refusal{err: errNotInAllowCIDRs, plainOnly: true}
	case cfg.MaxClientConn > 0 && n > int64(cfg.MaxClientConn):
		s.reject("max_client_conn")
		ss.handshake.refusal = &refusal{err: errMaxClientConn, exemptAdmin: true, forwardCancel: true}
	default:
		growStack() // refused clients do not pay for it
	}
	if ss.handshake.refusal != nil {
		defer s.refusing.Add(-1)
		if s.refusing.Add(1) > maxRefusing {
			// A flood: no time or bytes for this one.
			ss.sendFatal(ss.handshake.refusal.err)
			return nil
		}
	}
	if !ss.login(cfg) {
		return nil
	}
	return ss
}

// A refusal is the decision, taken at accept, to turn a client away. It
// is told only after the client's SSLRequest (if any) was answered and its
// startup packet read, as PgBouncer does for max_client_conn: libpq sends
// an SSLRequest first (sslmode=prefer) and reports an error in its place as
// "server sent an error response during SSL exchange" instead of the
// message. The whole exchange is bounded by refuseTimeout, and by
// MaxStartupPacket bytes per packet.
type refusal struct {
	err *protocol.Error
	// plainOnly answers an SSLRequest with 'N' rather than a handshake: a
	// client from a network it may not connect from is not worth one.
	plainOnly bool
	// exemptAdmin lets a client of the admin console in anyway, as
	// PgBouncer exempts it from max_client_conn.
	exemptAdmin bool
	// forwardCancel still forwards a cancel request on the connection.
	forwardCancel bool
}

var (
	errMaxClientConn   = protocol.Fatal(protocol.SQLStateTooManyConnections, "no more connections allowed (max_client_conn)")
	errNotInAllowCIDRs = protocol.Fatal(protocol.SQLStateInvalidAuthorization, "client address is not in allow_cidrs")
)

const (
	// refuseTimeout bounds the negotiation with a refused client.
	refuseTimeout = 2 * time.Second
	// maxRefusing bounds the refused clients negotiating at once; the
	// others get the FATAL straight away, unread.
	maxRefusing = 256
)

func (s *Server) reject(reason string) {
	if s.opts.Hooks != nil {
		s.opts.Hooks.ClientRejected(reason)
	}
}

func (s *Server) allowed(addr net.Addr) bool {
	cidrs := *s.cidrs.Load()
	if len(cidrs) == 0 {
		return true
	}
	ta, ok := addr.(*net.TCPAddr)
	if !ok {
		return true // unix socket: local
	}
	for _, n := range cidrs {
		if n.Contains(ta.IP) {
			return true
		}
	}
	return false
}

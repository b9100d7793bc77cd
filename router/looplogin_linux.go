//go:build linux && !pgferry_nopark

// Logins on the relay loop: a plain client that connects with a password
// method the loop runs (trust, md5, SCRAM-SHA-256) to a pool the loop
// serves logs in without a goroutine, as it is then served.

package router

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/auth"
	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/sockio"
	"github.com/pgferry/pgferry/protocol"
)

// A client that connects per transaction (a serverless function, pgbench
// -C) is mostly its login: on a goroutine, one spawn and a park and wake-up
// for each message the client sends (the startup packet, and SCRAM's two
// answers), which in a connection storm cost more than the relaying did
// (bench/README.md). The loop instead waits for each of them as it waits
// for a request (states loopLogin and loopLoginAuth), and the session goes
// from its greeting straight to its first request.
//
// The client comes as a bare descriptor (rawListener), never a net.Conn.
// The loop takes only the common case; whatever else a login may need is
// the goroutine's, as before: the loop looks at the startup packet first
// and, before it answers it, hands the client to a goroutine
// (loginHandoff) for TLS, a cancel request, a peer link, a protocol
// option, a replication connection, the admin console, an authentication
// method other than those three or one that may wait (auth_query, a
// throttled address, Entra ID), an alias, shutdown, and a pool that is
// not there yet, is not in transaction mode, routes to replicas, or has
// not greeted yet. With md5
// or SCRAM, a user not in auth_file (without auth_query) goes through
// SCRAM's mock exchange on the loop, as on a goroutine. The goroutine reads the
// bytes the loop read first. Once the loop has answered, it sees the
// login through: a failure ends it with the same FATAL a goroutine sends.

// Login steps (loginState.step) while the loop waits for an authentication
// message (loopLoginAuth).
const (
	stepMD5        uint8 = 1 + iota // the answer to the md5 challenge
	stepSCRAMFirst                  // SCRAM's SASLInitialResponse
	stepSCRAMFinal                  // SCRAM's final message
)

// loopLogins reports whether a client just accepted logs in on the loop.
func (p *parker) loopLogins() bool {
	return loopLoginsOn && inlineRelay && sockio.Available && p.loopOn() && !p.srv.isDraining() && p.start()
}

// takeFD gives a client just accepted on fd (a bare non-blocking socket,
// see rawListener) to the loop for its login. A client that is turned away
// (allow_cidrs, max_client_conn) goes to a goroutine as a net.Conn, which
// tells it why. The caller has taken the client's WaitGroup slot.
func (s *Server) takeFD(fd int, peer net.Addr) {
	cfg := s.cfg.Load()
	n := s.clients.Add(1)
	if !s.allowed(peer) || (cfg.MaxClientConn > 0 && n > int64(cfg.MaxClientConn)) {
		s.clients.Add(-1) // (serveClient counts it again, and refuses it)
		s.serveFD(fd)
		return
	}
	ss := &session{
		srv:         s,
		id:          s.ids.Add(1),
		fd:          int32(fd),
		peer:        peer,
		connectedAt: monoNow(),
		status:      protocol.TxIdle,
		handshake:   handshakes.Get().(*loginState),
		slot:        -1,
	}
	if !s.parker.await(ss, loopLogin, syscall.EPOLL_CTL_ADD) {
		// The parker is closing, or epoll failed: a goroutine logs the
		// client in (handOn recovers a panic before that, as no turn's
		// recover covers this goroutine).
		s.parker.handOn(ss)
	}
}

// serveFD serves a client accepted as a bare descriptor on a goroutine,
// as a net.Conn, as if Go's Accept had returned it. The caller has taken
// the client's WaitGroup slot.
func (s *Server) serveFD(fd int) {
	f := os.NewFile(uintptr(fd), "client")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		s.log.Warn("a client could not be served", zap.Error(err))
		s.wg.Done()
		return
	}
	go s.serveClient(sockio.Wrap(c))
}

// loginTurn goes on with the login of a session on the loop whose client
// socket is ready, until it waits again, is handed to a goroutine, has
// logged in (the loop then serves its first request) or ended.
func (p *parker) loginTurn(ss *session) {
	// A panic ends the login (or, once logged in, the session: the turn
	// that serves its first request runs here too), unless the loop let
	// go of it: loginHandoff's goroutine has it then, and endLogin, which
	// recovers its own, ended it.
	defer p.recoverTurn(ss)
	ss.loop &^= loopArmed // its one-shot registration fired
	h := ss.handshake
	for {
		// need is the length of the message in front (0: not known yet).
		need := 0
		if ss.loop == loopLogin && len(h.buf) >= 4 {
			need = int(int32(binary.BigEndian.Uint32(h.buf)))
			if need < 8 || need > protocol.MaxStartupPacket {
				p.loginHandoff(ss) // the goroutine refuses it
				return
			}
		} else if ss.loop == loopLoginAuth && len(h.buf) >= 5 {
			if h.buf[0] != protocol.MsgPassword {
				p.endLogin(ss, protocol.Fatal(protocol.SQLStateProtocolViolation, "expected "+stepWants(h.step)+", got message type "+strconv.Quote(string(h.buf[0]))))
				return
			}
			size := int(int32(binary.BigEndian.Uint32(h.buf[1:])))
			if size < 4 || size > 4+maxAuthMessage {
				p.endLogin(ss, errBadAuthMessage())
				return
			}
			need = 1 + size
		}
		if need == 0 || len(h.buf) < need {
			if !p.loginRead(ss, need) {
				return
			}
			continue
		}
		var ok bool
		if ss.loop == loopLogin {
			ok = p.loginStartup(ss, need)
		} else {
			ok = p.loginAuth(ss, need)
		}
		if !ok {
			return
		}
	}
}

// loginRead reads what the client sent into the login's buffer, making
// room for a message of need bytes (0: not known yet). It reports whether
// it read something; if not, the session waits for more, or has been
// handed on or ended.
func (p *parker) loginRead(ss *session, need int) bool {
	h := ss.handshake
	// Up to the message in front, or loginBufSize when it is smaller (a
	// length not read yet, too): what comes after the login's last
	// message is a request, which the relay's Reader takes (Prefill),
	// and never more than loginBufSize of it.
	end := max(need, loginBufSize)
	if cap(h.buf) < end {
		b := make([]byte, len(h.buf), end)
		copy(b, h.buf)
		clear(h.buf)
		h.buf = b
	}
	n, err := (&sockio.Raw{FD: int(ss.fd)}).Read(h.buf[len(h.buf):end])
	switch {
	case err == protocol.ErrWouldBlock:
		p.loginAwait(ss)
		return false
	case err != nil:
		p.endLogin(ss, err) // the client left
		return false
	}
	h.buf = h.buf[:len(h.buf)+n]
	return true
}

// consume drops the first n bytes of the login's buffer, wiping them.
func (h *loginState) consume(n int) {
	rest := copy(h.buf, h.buf[n:])
	clear(h.buf[rest:])
	h.buf = h.buf[:rest]
}

// loginStartup takes the client's startup-phase packet, the first n bytes
// of the login's buffer. It reports whether the login goes on on the loop.
func (p *parker) loginStartup(ss *session, n int) bool {
	h := ss.handshake
	// A copy: the parameters are substrings of it, and the buffer goes on
	// to hold the password.
	st, err := protocol.ParseStartup(bytes.Clone(h.buf[4:n]))
	if err != nil {
		p.loginHandoff(ss)
		return false
	}
	switch st.Code {
	case protocol.SSLRequestCode, protocol.GSSENCRequestCode:
		if st.Code == protocol.SSLRequestCode && ss.srv.ctls.Load() != nil {
			p.loginHandoff(ss) // TLS: the goroutine's
			return false
		}
		if !p.loginWrite(ss, []byte{'N'}) {
			return false
		}
		h.consume(n)
		if len(h.buf) == 0 {
			p.loginAwait(ss) // (the client waits for the answer first)
			return false
		}
		return true
	case protocol.CancelRequestCode, protocol.PeerLinkCode:
		p.loginHandoff(ss)
		return false
	}
	cfg := ss.srv.cfg.Load()
	if st.Minor() > 0 || len(st.ProtocolOptions) > 0 || replicationRequested(cfg, st) {
		p.loginHandoff(ss) // (the goroutine refuses a replication connection)
		return false
	}
	ss.user, ss.database = startupNames(st)
	if !p.loginPlan(ss, cfg, st) {
		ss.user, ss.database = "", ""
		p.loginHandoff(ss)
		return false
	}
	h.consume(n)
	h.st = st
	ss.srv.registerLogin(ss) // kills reach it from here (loginkill.go)
	switch {
	case h.method == "trust":
		ss.queueAuthOK()
		return p.loggedIn(ss, cfg)
	case h.method == "md5" && h.known && h.cred.Kind() == auth.KindMD5:
		rand.Read(h.salt[:])
		h.step = stepMD5
		return p.loginAsk(ss, authMD5Password, h.salt[:])
	}
	// SCRAM-SHA-256 (also for md5 with a SCRAM or plain secret, as on a
	// goroutine).
	var sc *auth.SCRAMServer
	if h.known && h.cred.CanSCRAM() {
		var err error
		if sc, err = auth.NewSCRAMServer(ss.user, h.cred, nil); err != nil {
			p.endLogin(ss, ss.authFailed())
			return false
		}
	} else {
		sc = auth.NewSCRAMServerForUnknownUser(ss.user, nil)
	}
	h.scram = sc
	h.step = stepSCRAMFirst
	var mechs [64]byte
	return p.loginAsk(ss, authSASL, sc.AppendMechanisms(mechs[:0]))
}

// loginPlan decides, from the startup packet alone and without waiting,
// whether the loop can see the login through (see the comment at the top),
// and keeps what it found in the login's state. It only looks: a client it
// declines is counted, logged and told on its goroutine.
func (p *parker) loginPlan(ss *session, cfg *configs.Config, st *protocol.Startup) bool {
	h := ss.handshake
	if adminDatabases[ss.database] || cfg.ClientTLSRequired() || ss.clientAuthEntra(cfg) || ss.srv.isDraining() {
		return false
	}
	method := cfg.AuthType
	if method == "hba" {
		method, _, _, _ = ss.hbaMethod()
	}
	if method != "trust" && method != "md5" && method != "scram-sha-256" || ss.srv.throttle.delay(ss.peer) > 0 {
		return false
	}
	if method != "trust" {
		cred, known := ss.srv.store.Load().Lookup(ss.user)
		if !known && authQueryConfigured(cfg, ss.database) {
			return false // auth_query: a query that waits
		}
		// A user not known, or whose secret cannot do SCRAM, goes through
		// SCRAM's mock exchange here too, as on a goroutine: answered on
		// the loop like any other, so that its timing does not tell
		// that the user does not exist.
		h.cred, h.known = cred, known
		if !known || !cred.CanSCRAM() && !(method == "md5" && cred.Kind() == auth.KindMD5) {
			// The mock exchange fails whatever the client sends: no
			// pool is needed (a goroutine would not look for one).
			h.method = method
			return true
		}
	}
	db, readOnly, ok := cfg.LookupDatabase(ss.database)
	if !ok || readOnly {
		return false
	}
	serverUser := db.User
	if serverUser == "" {
		serverUser = ss.user
	}
	ss.srv.mu.Lock()
	e := ss.srv.pools[poolKey{ss.database, serverUser}]
	ss.srv.mu.Unlock()
	if e == nil || e.mode != poolModeTransaction || e.monitor != nil {
		return false
	}
	if w, _ := e.setWelcome(nil); w == nil || !e.startupKnown(cfg, st, w) {
		return false // (a server to ask: login.go, paramsconfirm.go)
	}
	h.method, h.entry = method, e
	return true
}

// loginAuth takes the client's authentication message, the first n bytes
// of the login's buffer (a password message, checked by loginTurn). It
// reports whether the login goes on on the loop.
func (p *parker) loginAuth(ss *session, n int) bool {
	h := ss.handshake
	body := h.buf[5:n]
	var err error
	switch h.step {
	case stepMD5:
		pw, _, ok := protocol.CString(body)
		if !ok {
			err = errBadAuthMessage()
		} else {
			err = ss.checkMD5(h.known, h.cred, h.salt, string(pw))
		}
	case stepSCRAMFirst:
		var first []byte
		if first, err = ss.scramStart(h.scram, body); err == nil {
			h.consume(n)
			h.step = stepSCRAMFinal
			return p.loginAsk(ss, authSASLContinue, first)
		}
	case stepSCRAMFinal:
		err = ss.scramFinish(h.scram, h.known, h.cred, body)
	}
	h.consume(n)
	if err != nil {
		p.endLogin(ss, err)
		return false
	}
	return p.loggedIn(ss, ss.srv.cfg.Load())
}

// stepWants names the message a login step waits for, for errors.
func stepWants(step uint8) string {
	switch step {
	case stepSCRAMFirst:
		return "SASL initial response"
	case stepSCRAMFinal:
		return "SASL response"
	}
	return "password message"
}

// loginAsk sends an authentication request and waits for the answer. It
// reports whether the login goes on on the loop now (the answer may be
// there already).
func (p *parker) loginAsk(ss *session, code uint32, payload []byte) bool {
	h := ss.handshake
	h.scratch = protocol.AppendAuthentication(h.scratch[:0], code, payload)
	if !p.loginWrite(ss, h.scratch) {
		return false
	}
	ss.loop = loopLoginAuth
	if len(h.buf) == 0 {
		// The answer needs the request (a salt, a nonce): no read
		// could find it yet.
		p.loginAwait(ss)
		return false
	}
	return true
}

// loginAwait waits for more of a login on the loop. If the loop cannot
// wait (the parker is closing, or epoll failed), a login not answered yet
// goes to a goroutine, and one answered already ends.
func (p *parker) loginAwait(ss *session) {
	if !p.await(ss, ss.loop, 0) {
		p.loginStop(ss)
	}
}

// loginStop takes a login off the loop: ended with the kill's FATAL if it
// was killed, to a goroutine if the loop has not answered it yet, else
// ended (errLoginInterrupted).
func (p *parker) loginStop(ss *session) {
	if k := ss.killed(); k != nil {
		p.endLogin(ss, k)
	} else if ss.handshake.step == 0 {
		p.loginHandoff(ss)
	} else {
		p.endLogin(ss, errLoginInterrupted)
	}
}

// loginWrite writes a small message of the login to the client. A fresh
// socket has room for it: one that has none, or fails, ends the login.
func (p *parker) loginWrite(ss *session, b []byte) bool {
	if n, err := (&sockio.Raw{FD: int(ss.fd)}).Write(b); err != nil || n != len(b) {
		if err == nil || err == protocol.ErrWouldBlock {
			err = errors.New("no room to write to a client that is logging in")
		}
		p.endLogin(ss, err)
		return false
	}
	return true
}

// loggedIn ends a successful login on the loop as startup does on a
// goroutine (the session's pool, parameters and cancel key, and the
// greeting), then serves the session's first request. It reports false:
// the loop's turn of the session is over.
func (p *parker) loggedIn(ss *session, cfg *configs.Config) bool {
	h := ss.handshake
	e := h.entry
	ss.entry = e
	ss.txnMode = true
	ss.pinOnState = cfg.PinOnSessionState
	if err := ss.initParams(cfg, h.st); err != nil {
		p.endLogin(ss, err)
		return false
	}
	ss.pid, ss.key = ss.srv.newCancelKey()
	_, g := e.setWelcome(nil)
	raw := &sockio.Raw{FD: int(ss.fd)}
	ss.openClientIO(raw)
	ss.rd.Small = make([]byte, smallBufSize)
	if err := ss.rd.Prefill(h.buf); err != nil {
		p.endLogin(ss, err)
		return false
	}
	// The greeting goes out in one write, as on a goroutine (a fresh
	// socket has room for it; what it does not take waits in the Writer).
	out := append(h.scratch[:0], ss.takeAuthOK()...)
	out = g.appendTo(out, ss.params.lookup)
	out = protocol.AppendBackendKeyData(out, ss.pid, ss.key)
	out = protocol.AppendReadyForQuery(out, protocol.TxIdle)
	h.scratch = out
	n, err := raw.Write(out)
	switch {
	case err == protocol.ErrWouldBlock:
		ss.wr.Append(out[n:])
	case err != nil:
		p.endLogin(ss, err)
		return false
	}
	ss.dropHandshake()
	e.stats.clientLogins.Add(1)
	e.stats.loopEntries.Add(1)
	p.logins.Add(1)
	p.loopLoginsDone.Add(1)
	ss.activeTick.Store(p.tick.Load())
	ss.loop = loopClient // its first request (the greeting's rest first, if any)
	if ss.debugEnabled() {
		ss.logger().Debug("client connected")
	}
	ss.srv.register(ss)
	if ss.srv.isDraining() {
		// Shutdown began during the login, after it looked at the
		// sessions: the goroutine tells the client, as it tells one
		// that logged in meanwhile on a goroutine.
		p.evict(ss, "shutdown", false)
	} else if ss.rd.Buffered() > 0 || ss.wr.Len() > 0 {
		p.turn(ss, false)
	} else if !p.await(ss, loopClient, 0) {
		// (No read first: the client sends its request once greeted.)
		p.evict(ss, "cannot wait", false)
	}
	return false
}

// expireLoginLocked takes a session out of the set, for endExpired, if it
// is a login on the loop older than timeout (client_login_timeout), and
// reports whether it did. mu is held.
func (p *parker) expireLoginLocked(ss *session, timeout time.Duration, now mono) bool {
	if st := ss.loop &^ loopArmed; (st != loopLogin && st != loopLoginAuth) || now.Sub(ss.connectedAt) < timeout {
		return false
	}
	p.unholdLocked(ss)
	p.expired = append(p.expired, ss)
	return true
}

// expireLogins ends the logins on the loop older than
// client_login_timeout: settleLooped does it among its other work, this
// alone while shutting down (Shutdown waits for every client).
func (p *parker) expireLogins() {
	timeout := p.srv.cfg.Load().ClientLoginTimeout.Std()
	if timeout <= 0 {
		return
	}
	now := monoNow()
	p.mu.Lock()
	p.eachHeldLocked(func(ss *session) { p.expireLoginLocked(ss, timeout, now) })
	p.mu.Unlock()
	p.endExpired()
}

// errLoginInterrupted ends a login the loop had answered when the parker
// stops (shutdown, or an epoll failure): a goroutine cannot take up an
// exchange half done.
var errLoginInterrupted = protocol.Fatal(protocol.SQLStateConnectionFailure, "pgferry stopped this login before it was done; connect again")

package router

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/auth"
	"github.com/pgferry/pgferry/auth/entra"
	"github.com/pgferry/pgferry/auth/hba"
	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router/classify"
)

const (
	poolModeTransaction = "transaction"
	poolModeSession     = "session"
)

// adminDatabases are the virtual databases of the admin console.
var adminDatabases = map[string]bool{"pgbouncer": true, "pgferry": true}

// session is one client connection. Its goroutine (run) owns the client
// conn and is the only writer to the linked server. In transaction mode it
// also reads the server's responses itself (relayInline); a session in
// session mode or pinned to its server, or a loan an inline relay handed
// off, has a pump goroutine that reads the server and is the only writer to
// the client while the server is linked. The two meet under mu.
type session struct {
	srv  *Server
	lg   atomic.Pointer[zap.Logger] // built on first use by logger()
	id   uint64
	raw  net.Conn // the accepted socket; closed by run
	conn net.Conn // raw or TLS over raw
	tls  bool
	rd   *protocol.Reader // client frames
	wr   *protocol.Writer // to the client: run's while unlinked, the pump's while linked
	// in reads the client during login (see beginLogin); pending holds
	// what it read past the login, for rd.
	in      *bufio.Reader
	pending []byte

	user, database string
	admin          bool // an admin console session (set by startAdmin)
	entry          *poolEntry
	txnMode        bool
	pid, key       uint32
	connectedAt    time.Time
	clientAddr     string
	appName        string
	pinOnState     bool
	startupParams  []protocol.Param
	// authOK holds the end of a successful authentication exchange until
	// it can go out with the next write (see sendAuthOK).
	authOK []byte
	// refusal, when set at accept, turns the client away once its startup
	// packet is read (see refusal). Login only.
	refusal *refusal

	// stmts maps the client's statement names to statements. Only run
	// touches it.
	stmts map[string]*clientStmt
	// stateStmts and statePortals map the client's statements and portals
	// that change session state (SET of a tracked parameter, RESET,
	// DISCARD, LISTEN, UNLISTEN) to what they do, so that executing one
	// through the extended protocol is tracked as the same text in a
	// simple Query is. Both stay nil for clients that never prepare such a
	// statement. Only run touches them.
	stateStmts, statePortals map[string]*classify.Class
	// execTag, when not 0, replaces the answer to the next Execute the
	// session relays (see execTagFrames). Only run touches it.
	execTag uint8

	// mu guards the link state. Held only for bookkeeping, never for I/O.
	mu       sync.Mutex
	server   *pool.ServerConn // linked server, nil between transactions
	q        ring             // what the server still owes, in order
	status   byte             // last ReadyForQuery status from the server
	pinned   bool             // session state ties the client to server
	stopping bool             // run is taking the server back from the pump
	dead     error            // the pump lost the server or the client
	pumpDone chan struct{}    // closed when the current pump exits
	// serverStuck marks a server query_timeout gave up on: its read
	// deadline is set to stop the relay. Guarded by mu.
	serverStuck bool
	// inline marks a loan whose responses the session goroutine relays
	// itself; no pump is running. run only.
	inline bool
	// peeker checks whether a queued client is still there; built on the
	// first wait. run only.
	peeker *protocol.Peeker
	// waitTimer times query_wait_timeout; made on the first wait, dropped
	// when the session parks. run only.
	waitTimer *time.Timer
	params    paramList
	paramKeys []string
	// tentative holds the client's SET/RESET of unreported parameters until
	// their transaction ends; tentativeAborted marks a rollback or error
	// since. Guarded by mu.
	// cancels counts cancel requests being delivered to the linked server;
	// releaseDeferred marks a finished transaction whose server waits for
	// them; pumpKick tells the pump that the wait is over.
	cancels         int
	releaseDeferred bool
	pumpKick        bool

	// paramsKey encodes params (recomputed when paramsDirty) so a server
	// already synced to the same set needs no work. Guarded by mu.
	paramsKey   string
	paramsDirty bool

	tentative        []paramChange
	tentativeAborted bool
	// mailbox holds notifications (raw frames) waiting for the end of the
	// client's transaction.
	mailbox []byte

	// wmu is held by run while it writes to the linked server, so the pump
	// never releases a server in the middle of a write.
	wmu sync.Mutex

	linkedAt time.Time // when the current server was linked (run writes, pump reads after link)

	listening bool // subscribed through the pool's listener; run only

	queryTimer *time.Timer // query_timeout; guarded by mu
	txnTimer   *time.Timer // transaction_timeout; guarded by mu
	// doomed is the FATAL a session being disconnected ends with: its
	// transaction outlived transaction_timeout, or its notifications
	// piled up unread (see notify). Guarded by mu.
	doomed   *protocol.Error
	querySeq uint64 // counts armed query timeouts; guarded by mu

	// idleDeadline is the client read deadline setReadDeadline armed (zero:
	// none); noDeadline records that run cleared the deadline and armed none
	// since, so the next clear can be skipped. run only.
	idleDeadline time.Time
	noDeadline   bool
	// serverFatal keeps the message of a FATAL error the server sent before
	// closing, for the error the client gets instead. Guarded by mu.
	serverFatal []byte
	// Read routing, guarded by mu: where the linked server is, whether the
	// transaction was routed as a read, and when the client last finished
	// a transaction on the primary (read_your_writes).
	onReplica, txReadOnly bool
	lastWrite             time.Time
	readOnlyAlias         bool // connected through readonly_alias; set at startup

	// poolName is the database entry the session's pools belong to and
	// clientPassword the password the client revealed (plain auth only),
	// kept to find the new pools after a reload replaced them.
	poolName, clientPassword string

	waiting atomic.Bool // queued for a server connection
	killed  atomic.Bool
	wakeReq atomic.Bool

	// Parking (park_linux.go): fd is the plain TCP socket's descriptor (-1:
	// never parked, e.g. TLS); activeTick the parker's sweep count when the
	// session last read a request; parkReq a sweep's request to park;
	// parked that the session is in the parker's set, without a goroutine.
	fd         int
	activeTick atomic.Uint32
	parkReq    atomic.Bool
	parked     atomic.Bool
	// idleTimer resumes a session parked with client_idle_timeout armed
	// when it is due; resumed tells the new run to keep the deadline the
	// old one armed. Set by the parker, read by the run it starts.
	idleTimer *time.Timer
	resumed   bool
}

// serveClient runs a new client's login on the accepting goroutine, then
// the session. A TLS session continues on a fresh goroutine instead: the
// handshake leaves a stack several times deeper than the relay needs,
// which thousands of idle sessions would otherwise keep until they park.
// (A plain login fits in the stack growStack gives every session, so
// another goroutine would only cost a spawn, a wake-up and a second
// growth.) Whichever goroutine holds the connection last closes it and
// releases its client count and WaitGroup slot.
func (s *Server) serveClient(raw net.Conn) {
	ss := s.admit(raw)
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
func (s *Server) admit(raw net.Conn) (logged *session) {
	n := s.clients.Add(1)
	defer func() {
		if logged == nil {
			raw.Close()
			s.clients.Add(-1)
			s.wg.Done()
		}
	}()
	ss := &session{
		srv:         s,
		id:          s.ids.Add(1),
		raw:         raw,
		conn:        raw,
		connectedAt: time.Now(),
		clientAddr:  raw.RemoteAddr().String(),
		status:      protocol.TxIdle,
	}
	defer ss.recoverPanic() // logged stays nil: the connection is released
	cfg := s.cfg.Load()
	switch {
	case !s.allowed(raw.RemoteAddr()):
		s.reject("allow_cidrs")
		ss.logger().Info("client refused by allow_cidrs")
		ss.refusal = &refusal{err: errNotInAllowCIDRs, plainOnly: true}
	case cfg.MaxClientConn > 0 && n > int64(cfg.MaxClientConn):
		s.reject("max_client_conn")
		ss.refusal = &refusal{err: errMaxClientConn, exemptAdmin: true, forwardCancel: true}
	default:
		growStack() // refused clients do not pay for it
	}
	if ss.refusal != nil {
		defer s.refusing.Add(-1)
		if s.refusing.Add(1) > maxRefusing {
			// A flood: no time or bytes for this one.
			ss.sendFatal(ss.refusal.err)
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

// serveLoggedIn relays for a logged-in client until it leaves. It owns the
// connection, the client count and the WaitGroup slot taken at accept.
func (ss *session) serveLoggedIn() {
	ss.fd = -1
	if !ss.admin {
		ss.fd = socketFD(ss.raw) // under TLS too: the parker waits on the TCP socket
		if ss.fd >= 0 && !ss.srv.parker.start() {
			ss.fd = -1
		}
	}
	ss.activeTick.Store(ss.srv.parker.tick.Load())
	ss.srv.register(ss)
	if ss.debugEnabled() {
		ss.logger().Debug("client connected")
	}
	ss.run()
}

// run serves the client until it leaves, or until the session parks
// (errParked): then this goroutine ends and the parker starts a new run
// when the client sends something or the session is woken.
func (ss *session) run() {
	parked := false
	defer func() {
		if parked {
			return
		}
		ss.srv.unregister(ss)
		if ss.rd != nil {
			ss.rd.Release()
			ss.wr.Release()
		}
		ss.raw.Close()
		ss.srv.clients.Add(-1)
		ss.srv.wg.Done()
	}()
	defer ss.recoverPanic() // a panic in finish
	err := ss.serveRecovering()
	if err == errParked {
		parked = true
		return
	}
	ss.finish(err)
}

// errParked ends a run whose session the parker now holds.
var errParked = errors.New("session parked")

// serveRecovering runs serve, turning a panic into an error so that finish
// still takes back a linked server; its state is unknown, so finish
// destroys it.
func (ss *session) serveRecovering() (err error) {
	defer func() {
		if r := recover(); r != nil {
			ss.logger().Error("session panicked", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
			ss.mu.Lock()
			ss.status = protocol.TxFailed
			ss.mu.Unlock()
			err = errInternal
		}
	}()
	return ss.serve()
}

var errInternal = protocol.Fatal(protocol.SQLStateInternalError, "internal error in pgferry")

// recoverPanic keeps a panic in one session from killing the process.
func (ss *session) recoverPanic() {
	if r := recover(); r != nil {
		ss.logger().Error("session panicked", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
	}
}

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

// sendFatal writes a FATAL error straight to the client (no server linked).
func (ss *session) sendFatal(e *protocol.Error) {
	ss.conn.SetWriteDeadline(time.Now().Add(time.Second))
	ss.conn.Write(e.AppendFrame(ss.takeAuthOK()))
}

// login runs the startup and authentication exchange. It reports whether
// the client is logged in; on failure the client has been told why.
func (ss *session) login(cfg *configs.Config) bool {
	if d := cfg.ClientLoginTimeout.Std(); ss.refusal != nil {
		if d <= 0 || d > refuseTimeout {
			d = refuseTimeout
		}
		ss.raw.SetDeadline(time.Now().Add(d))
	} else if d > 0 {
		ss.raw.SetDeadline(time.Now().Add(d))
	}
	ss.beginLogin()
	err := ss.startup(cfg)
	ss.endLogin()
	if err == nil {
		ss.raw.SetDeadline(time.Time{})
		return true
	}
	if errors.Is(err, errAdminDone) {
		return false
	}
	var pe *protocol.Error
	var re *relayedError
	if ss.refusal != nil {
		// Refused clients are counted by reason, not logged one by one: a
		// flood would flood the log.
		if errors.Is(err, ss.refusal.err) || isTimeout(err) {
			ss.sendFatal(ss.refusal.err)
		} else if errors.As(err, &pe) {
			ss.sendFatal(pe)
		}
		return false
	}
	if errors.As(err, &pe) {
		ss.sendFatal(pe)
	} else if errors.As(err, &re) {
		// The server refused pgferry's login: the client sees the
		// server's own error, as PgBouncer relays it.
		ss.conn.SetWriteDeadline(time.Now().Add(time.Second))
		ss.conn.Write(append(ss.takeAuthOK(), re.frame...))
	} else if isTimeout(err) {
		ss.sendFatal(protocol.Fatal(protocol.SQLStateProtocolViolation, "client_login_timeout"))
	}
	if !errors.Is(err, errCancelDone) && !isEOF(err) {
		ss.logger().Info("client login failed", zap.Error(err))
	}
	return false
}

var errCancelDone = errors.New("cancel request handled")

// startup runs SSL negotiation, the startup message and authentication,
// then greets the client.
func (ss *session) startup(cfg *configs.Config) error {
	var st *protocol.Startup
	for {
		var err error
		st, err = protocol.ReadStartup(ss.in)
		if err != nil {
			ss.srv.reject("protocol")
			return err
		}
		switch st.Code {
		case protocol.SSLRequestCode:
			if ss.tls {
				return protocol.Fatal(protocol.SQLStateProtocolViolation, "SSLRequest received on an encrypted connection")
			}
			tc := ss.srv.ctls.Load()
			if tc == nil || (ss.refusal != nil && ss.refusal.plainOnly) {
				if _, err := ss.conn.Write([]byte{'N'}); err != nil {
					return err
				}
				continue
			}
			if ss.in.Buffered() > 0 {
				// Bytes sent before the TLS handshake would otherwise be
				// taken as sent over TLS (CVE-2021-23214 in PostgreSQL).
				return protocol.Fatal(protocol.SQLStateProtocolViolation, "received unencrypted data after SSL request")
			}
			if _, err := ss.conn.Write([]byte{'S'}); err != nil {
				return err
			}
			t := tls.Server(ss.raw, tc)
			if err := t.Handshake(); err != nil {
				ss.srv.reject("tls")
				return fmt.Errorf("client TLS handshake: %w", err)
			}
			ss.conn, ss.tls = t, true
			ss.in.Reset(t)
			continue
		case protocol.GSSENCRequestCode:
			if _, err := ss.conn.Write([]byte{'N'}); err != nil {
				return err
			}
			continue
		case protocol.CancelRequestCode:
			if ss.refusal == nil || ss.refusal.forwardCancel {
				ss.srv.forwardCancel(st.CancelPID, st.CancelKey)
			}
			return errCancelDone
		}
		break
	}
	if r := ss.refusal; r != nil {
		if !r.exemptAdmin || !adminDatabases[startupDatabase(st)] {
			return r.err
		}
		// The admin console may still log in, with the usual time.
		ss.refusal = nil
		if d := cfg.ClientLoginTimeout.Std(); d > 0 {
			ss.raw.SetDeadline(time.Now().Add(d))
		} else {
			ss.raw.SetDeadline(time.Time{})
		}
		growStack()
	}
	if st.Minor() > 0 || len(st.ProtocolOptions) > 0 {
		if _, err := ss.conn.Write(protocol.AppendNegotiateProtocolVersion(nil, st.ProtocolOptions)); err != nil {
			return err
		}
	}
	if !ss.tls {
		switch cfg.ClientTLSSSLMode {
		case "require", "verify-ca", "verify-full":
			ss.srv.reject("tls")
			e := protocol.Fatal(protocol.SQLStateInvalidAuthorization, "SSL required")
			e.Detail = "pgferry is configured with client_tls_sslmode = " + cfg.ClientTLSSSLMode + "; connect with sslmode=require or stronger"
			return e
		}
	}
	ss.user = st.Get("user")
	ss.database = startupDatabase(st)
	password, err := ss.authenticate(cfg)
	if err != nil {
		return err
	}
	if adminDatabases[ss.database] {
		ss.startupParams = st.Params // SHOW CLIENTS of the console reads them
		return ss.startAdmin(cfg)
	}
	db, readOnly, ok := cfg.LookupDatabase(ss.database)
	if !ok {
		return protocol.Fatal(protocol.SQLStateInvalidCatalogName, fmt.Sprintf("no such database: %s", ss.database))
	}
	poolName := ss.database
	if readOnly {
		// The alias shares the database's pools; every transaction of the
		// session is a read.
		poolName, ss.readOnlyAlias = aliasTarget(cfg, ss.database), true
	}
	serverUser := db.User
	if serverUser == "" {
		serverUser = ss.user
	}
	ss.poolName, ss.clientPassword = poolName, password
	entry, err := ss.srv.poolFor(poolName, db, serverUser, password)
	if err != nil {
		return err
	}
	ss.entry = entry
	ss.txnMode = entry.mode == poolModeTransaction
	ss.pinOnState = cfg.PinOnSessionState

	if err := ss.initParams(cfg, st); err != nil {
		return err
	}
	ss.pid, ss.key = randomKey()
	if err := ss.greet(); err != nil {
		return err
	}
	entry.stats.clientLogins.Add(1)
	return nil
}

// startupDatabase returns the database a startup packet asks for, which
// defaults to the user name.
func startupDatabase(st *protocol.Startup) string {
	if db := st.Get("database"); db != "" {
		return db
	}
	return st.Get("user")
}

func randomKey() (uint32, uint32) {
	var b [8]byte
	rand.Read(b[:])
	// Keep the pid positive: some clients print it as a signed integer.
	return binary.BigEndian.Uint32(b[:4]) & 0x7fffffff, binary.BigEndian.Uint32(b[4:])
}

// authenticate checks the client's password per auth_type. It returns the
// cleartext password when the exchange revealed it (plain auth), which may
// serve as the server password when the database entry has none.
func (ss *session) authenticate(cfg *configs.Config) (string, error) {
	method, err := ss.authMethod(cfg)
	if err != nil {
		return "", err
	}
	fail := func() error {
		ss.srv.reject("auth")
		ss.srv.throttle.failed(ss.raw.RemoteAddr())
		return protocol.Fatal(protocol.SQLStateInvalidPassword, fmt.Sprintf("password authentication failed for user %q", ss.user))
	}
	if d := ss.srv.throttle.delay(ss.raw.RemoteAddr()); d > 0 {
		time.Sleep(d)
	}
	switch method {
	case "trust":
		ss.queueAuthOK()
		return "", nil
	case "cert":
		return "", ss.certLogin()
	case "entra":
		return "", ss.entraLogin(cfg)
	}
	cred, known := ss.srv.store.Load().Lookup(ss.user)
	switch {
	case method == "plain" || (method == "md5" && known && cred.Kind() == auth.KindMD5):
		if method == "plain" {
			if err := ss.sendAuth(authCleartextPassword, nil); err != nil {
				return "", err
			}
			pw, err := ss.readPassword()
			if err != nil {
				return "", err
			}
			if !known || !auth.VerifyPlain(cred, pw) {
				return "", fail()
			}
			ss.srv.throttle.succeeded(ss.raw.RemoteAddr())
			ss.queueAuthOK()
			return pw, nil
		}
		var salt [4]byte
		rand.Read(salt[:])
		if err := ss.sendAuth(authMD5Password, salt[:]); err != nil {
			return "", err
		}
		pw, err := ss.readPassword()
		if err != nil {
			return "", err
		}
		if !known || !auth.VerifyMD5(ss.user, cred, salt, pw) {
			return "", fail()
		}
		ss.srv.throttle.succeeded(ss.raw.RemoteAddr())
		ss.queueAuthOK()
		return "", nil
	}
	// SCRAM-SHA-256 (also for md5 with a SCRAM or plain secret, as PgBouncer).
	var binding []byte
	if ss.tls {
		binding = *ss.srv.certHash.Load()
	}
	var sc *auth.SCRAMServer
	if known && cred.CanSCRAM() {
		var err error
		if sc, err = auth.NewSCRAMServer(ss.user, cred, binding); err != nil {
			return "", fail()
		}
	} else {
		sc = auth.NewSCRAMServerForUnknownUser(ss.user, binding)
	}
	var mechs []byte
	for _, m := range sc.Mechanisms() {
		mechs = append(append(mechs, m...), 0)
	}
	if err := ss.sendAuth(authSASL, append(mechs, 0)); err != nil {
		return "", err
	}
	body, err := ss.readAuthMessage("SASL initial response")
	if err != nil {
		return "", err
	}
	// SASLInitialResponse: mechanism, then the length of the data (-1: none)
	// and the data.
	mech, rest, ok := protocol.CString(body)
	if !ok || len(rest) < 4 {
		return "", errBadAuthMessage()
	}
	n, data := int32(binary.BigEndian.Uint32(rest)), rest[4:]
	switch {
	case n == -1 && len(data) == 0:
		data = nil
	case n < 0 || int(n) != len(data):
		return "", errBadAuthMessage()
	}
	first, err := sc.Start(string(mech), data)
	if err != nil {
		return "", scramErr(err, fail)
	}
	if err := ss.sendAuth(authSASLContinue, first); err != nil {
		return "", err
	}
	resp, err := ss.readAuthMessage("SASL response") // the data alone
	if err != nil {
		return "", err
	}
	final, err := sc.Finish(resp)
	if err != nil {
		return "", scramErr(err, fail)
	}
	ss.srv.throttle.succeeded(ss.raw.RemoteAddr())
	ss.authOK = protocol.AppendAuthentication(ss.authOK, authSASLFinal, final)
	ss.queueAuthOK()
	return "", nil
}

// authMethod returns the authentication method for the client: "entra"
// when its database or user says client_auth = "entra", else auth_type,
// or with auth_type "hba" the method of the first auth_hba_file line that
// applies. A client no line admits, or a reject line, is refused here with
// PostgreSQL's SQLSTATE (28000) and a message shaped like its own.
func (ss *session) authMethod(cfg *configs.Config) (string, error) {
	if ss.clientAuthEntra(cfg) {
		return "entra", nil
	}
	if cfg.AuthType != "hba" {
		return cfg.AuthType, nil
	}
	rules := ss.srv.hba.Load()
	c := hba.Conn{TLS: ss.tls, Database: ss.database, User: ss.user, Local: true}
	host := "[local]"
	if ta, ok := ss.raw.RemoteAddr().(*net.TCPAddr); ok {
		c.Local, c.Addr = false, ta.AddrPort().Addr()
		host = c.Addr.Unmap().String()
	}
	var rule hba.Rule
	ok := false
	if rules != nil {
		rule, ok = rules.Match(c)
	}
	if ok && rule.Method != hba.MethodReject {
		if ss.debugEnabled() {
			ss.logger().Debug("auth_hba_file line matched", zap.String("hba_file", rule.File), zap.Int("hba_line", rule.Line), zap.String("method", string(rule.Method)))
		}
		if rule.Method == hba.MethodPassword {
			return "plain", nil
		}
		return string(rule.Method), nil
	}
	ss.srv.reject("hba")
	enc := "no encryption"
	if ss.tls {
		enc = "SSL encryption"
	}
	msg := fmt.Sprintf("no auth_hba_file entry for host %q, user %q, database %q, %s", host, ss.user, ss.database, enc)
	if ok {
		msg = fmt.Sprintf("auth_hba_file rejects connection for host %q, user %q, database %q, %s", host, ss.user, ss.database, enc)
		ss.logger().Info("client refused by auth_hba_file", zap.String("hba_file", rule.File), zap.Int("hba_line", rule.Line))
	}
	return "", protocol.Fatal(protocol.SQLStateInvalidAuthorization, msg)
}

// certLogin admits a client whose verified TLS client certificate names it:
// the certificate's common name must equal the user name, as PostgreSQL's
// cert method requires without a user name map. The TLS handshake already
// verified the certificate against client_tls_ca_file.
func (ss *session) certLogin() error {
	var certs []*x509.Certificate
	if t, ok := ss.conn.(*tls.Conn); ok {
		certs = t.ConnectionState().PeerCertificates
	}
	if len(certs) == 0 {
		ss.srv.reject("auth")
		return protocol.Fatal(protocol.SQLStateInvalidAuthorization, "connection requires a valid client certificate")
	}
	if cn := certs[0].Subject.CommonName; cn != ss.user {
		ss.srv.reject("auth")
		ss.logger().Info("client certificate names another user", zap.String("cert_common_name", cn))
		return protocol.Fatal(protocol.SQLStateInvalidAuthorization, fmt.Sprintf("certificate authentication failed for user %q", ss.user))
	}
	ss.queueAuthOK()
	return nil
}

// Authentication request codes (the int32 after 'R').
const (
	authOK                = 0
	authCleartextPassword = 3
	authMD5Password       = 5
	authSASL              = 10
	authSASLContinue      = 11
	authSASLFinal         = 12
)

// maxAuthMessage bounds a password or SASL message, as PostgreSQL's
// PG_MAX_AUTH_TOKEN_LENGTH does.
const maxAuthMessage = 65535

func errBadAuthMessage() error {
	return protocol.Fatal(protocol.SQLStateProtocolViolation, "invalid authentication message")
}

// sendAuth writes an authentication request.
func (ss *session) sendAuth(code uint32, payload []byte) error {
	_, err := ss.conn.Write(protocol.AppendAuthentication(nil, code, payload))
	return err
}

// readAuthMessage reads the client's next message, which must be a
// password or SASL message ('p', want names it for the error), and returns
// its body. It reads exactly the message, nothing after it.
func (ss *session) readAuthMessage(want string) ([]byte, error) {
	var h [5]byte
	if _, err := io.ReadFull(ss.in, h[:]); err != nil {
		return nil, protocolErr(err)
	}
	n := int(int32(binary.BigEndian.Uint32(h[1:]))) - 4
	if h[0] != protocol.MsgPassword {
		return nil, protocol.Fatal(protocol.SQLStateProtocolViolation, "expected "+want+", got message type "+strconv.Quote(string(h[0])))
	}
	if n < 0 || n > maxAuthMessage {
		return nil, errBadAuthMessage()
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(ss.in, body); err != nil {
		return nil, protocolErr(err)
	}
	return body, nil
}

// loginReaders recycles the buffered readers of logins.
var loginReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, loginBufSize) }}

// loginBufSize bounds one read during login: a startup packet, a SASL
// message or a password usually fits, so that its length and body cost one
// read system call instead of two.
const loginBufSize = 512

// beginLogin gives the session its login reader.
func (ss *session) beginLogin() {
	ss.in = loginReaders.Get().(*bufio.Reader)
	ss.in.Reset(ss.conn)
}

// endLogin keeps what the login reader read past the login (a client may
// send its first query without waiting for ReadyForQuery) for the relay's
// Reader, and gives the login reader back. It is safe to call twice.
func (ss *session) endLogin() {
	if ss.in == nil {
		return
	}
	if n := ss.in.Buffered(); n > 0 {
		b, _ := ss.in.Peek(n)
		ss.pending = append([]byte(nil), b...)
	}
	ss.in.Reset(nil)
	loginReaders.Put(ss.in)
	ss.in = nil
}

// takePending moves the bytes endLogin kept into rd.
func (ss *session) takePending(rd *protocol.Reader) error {
	err := rd.Prefill(ss.pending)
	ss.pending = nil
	return err
}

// readPassword reads a PasswordMessage: the password, NUL-terminated.
func (ss *session) readPassword() (string, error) {
	body, err := ss.readAuthMessage("password message")
	if err != nil {
		return "", err
	}
	pw, _, ok := protocol.CString(body)
	if !ok {
		return "", errBadAuthMessage()
	}
	return string(pw), nil
}

// queueAuthOK queues AuthenticationOk; it goes out in one write with the
// welcome (greet), or before whatever else the client is told next
// (takeAuthOK), instead of in a packet of its own.
func (ss *session) queueAuthOK() {
	ss.authOK = protocol.AppendAuthentication(ss.authOK, authOK, nil)
}

// takeAuthOK returns the queued authentication messages (SASLFinal and
// AuthenticationOk) for the caller to send first, and forgets them.
func (ss *session) takeAuthOK() []byte {
	b := ss.authOK
	ss.authOK = nil
	return b
}

func scramErr(err error, fail func() error) error {
	var pe *auth.ProtocolError
	if errors.As(err, &pe) {
		return protocol.Fatal(protocol.SQLStateProtocolViolation, pe.Msg)
	}
	return fail()
}

func protocolErr(err error) error {
	if isEOF(err) || isTimeout(err) {
		return err
	}
	return errBadAuthMessage()
}

// greet sends the server's parameters (with the client's own values for
// those it set), the proxy-issued BackendKeyData and ReadyForQuery.
func (ss *session) greet() error {
	out := ss.takeAuthOK()
	welcome, err := ss.welcome()
	if err != nil {
		return err
	}
	for k, v := range welcome {
		if cv, ok := ss.params.lookup(k); ok {
			v = cv
		}
		out = protocol.AppendParameterStatus(out, k, v)
	}
	out = protocol.AppendBackendKeyData(out, ss.pid, ss.key)
	out = protocol.AppendReadyForQuery(out, protocol.TxIdle)
	_, err = ss.conn.Write(out)
	return err
}

// welcome returns the ParameterStatus set of the pool's servers, logging in
// once if no server connection has been seen yet.
func (ss *session) welcome() (map[string]string, error) {
	e := ss.entry
	e.welcomeMu.Lock()
	w := e.welcome
	e.welcomeMu.Unlock()
	if w != nil {
		return w, nil
	}
	cfg := ss.srv.cfg.Load()
	ctx, cancel := ss.waitContext(cfg)
	defer cancel()
	sc, err := e.pool.Acquire(ctx)
	if err != nil {
		return nil, ss.acquireError(err)
	}
	w = make(map[string]string, len(sc.Params))
	for k, v := range sc.Params {
		w[k] = v
	}
	e.pool.Release(sc)
	e.welcomeMu.Lock()
	if e.welcome == nil {
		e.welcome = w
	}
	e.welcomeMu.Unlock()
	return w, nil
}

func (ss *session) waitContext(cfg *configs.Config) (context.Context, context.CancelFunc) {
	if d := cfg.QueryWaitTimeout.Std(); d > 0 {
		return context.WithTimeout(context.Background(), d)
	}
	return context.WithCancel(context.Background())
}

// acquireError turns a pool error into what the client is told.
func (ss *session) acquireError(err error) error {
	var se *pool.ServerError
	var lf *pool.LoginFailingError
	var te *entra.TokenError
	switch {
	case errors.As(err, &te):
		// The message names the database and the reason, never a secret;
		// checked first, as a token request cut short by the wait timeout
		// wraps context.DeadlineExceeded.
		return protocol.Fatal(protocol.SQLStateUnableToConnect, "pgferry "+te.Error())
	case errors.As(err, &lf):
		msg := lf.Err.Error()
		if errors.As(lf.Err, &se) {
			msg = se.Message
		}
		return protocol.Fatal(protocol.SQLStateConnectionFailure, "server login has been failing, cached error: "+msg+" (server_login_retry)")
	case errors.As(err, &se):
		return &relayedError{frame: se.Frame, err: err}
	case errors.Is(err, pool.ErrWaitTimeout),
		errors.Is(err, context.DeadlineExceeded) && !strings.Contains(err.Error(), "dial") && !strings.Contains(err.Error(), "login"):
		return protocol.Fatal(protocol.SQLStateProtocolViolation, "query_wait_timeout")
	case errors.Is(err, pool.ErrPoolClosed):
		return protocol.Fatal(protocol.SQLStateAdminShutdown, "database configuration changed or pgferry is shutting down; reconnect")
	}
	ss.logger().Warn("server connection failed", zap.Error(err))
	return protocol.Fatal(protocol.SQLStateConnectionFailure, "pgferry could not connect to the server for database "+ss.database+": "+sanitize(err))
}

// sanitize bounds an internal error's text before a client sees it. Errors
// from dialing never contain secrets (DialConfig holds them in
// PasswordSource, which is not printed).
func sanitize(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 300 {
		s = s[:300]
	}
	return s
}

// relayedError carries a server's ErrorResponse to the client verbatim.
type relayedError struct {
	frame []byte
	err   error
}

func (e *relayedError) Error() string { return e.err.Error() }
func (e *relayedError) Unwrap() error { return e.err }

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, os.ErrClosed) || strings.Contains(err.Error(), "connection reset")
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// wake interrupts a session blocked reading its client (or parked) so it
// can notice shutdown, a dead server or pending notifications.
func (ss *session) wake() {
	ss.wakeReq.Store(true)
	ss.raw.SetReadDeadline(time.Unix(1, 0))
	ss.srv.parker.unpark(ss)
}

// kill makes the session end as soon as possible.
func (ss *session) kill() {
	ss.killed.Store(true)
	ss.raw.SetDeadline(time.Unix(1, 0))
	ss.srv.parker.unpark(ss)
	// Under mu: a server released meanwhile may be another client's now.
	ss.mu.Lock()
	if ss.server != nil {
		ss.server.Interrupt()
	}
	ss.mu.Unlock()
}

// logger returns the session's logger with conn_id, client_addr, user and
// database. It is built on first use: most sessions never log at the
// configured level, and a zap child logger costs memory per client.
func (ss *session) logger() *zap.Logger {
	if l := ss.lg.Load(); l != nil {
		return l
	}
	fields := []zap.Field{zap.Uint64("conn_id", ss.id), zap.String("client_addr", ss.clientAddr)}
	if ss.user != "" {
		fields = append(fields, zap.String("user", ss.user), zap.String("database", ss.database))
	}
	l := ss.srv.log.With(fields...)
	if ss.user != "" {
		ss.lg.Store(l) // complete: keep it
	}
	return l
}

// debugEnabled reports whether debug logs would be written, so per-session
// debug lines cost nothing when they are off.
func (ss *session) debugEnabled() bool { return ss.srv.log.Core().Enabled(zap.DebugLevel) }

package router

import (
	"bufio"
	"crypto/x509"
	"errors"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
	"unique"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/auth"
	"github.com/pgferry/pgferry/internal/tls13"
	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router/classify"
)

const (
	poolModeTransaction = "transaction"
	poolModeSession     = "session"
)

// session is one client connection. Its goroutine (run) owns the client
// conn and is the only writer to the linked server. In transaction mode it
// also reads the server's responses itself (relayInline); a session in
// session mode or pinned to its server, or a loan an inline relay handed
// off, has a pump goroutine that reads the server and is the only writer to
// the client while the server is linked. The two meet under mu.
//
// Thousands of idle sessions are what pgferry's memory is made of, so the
// struct is kept small (TestSessionStaysSmall): what only the login needs
// lives in handshake, what few sessions use in rare, timestamps are mono (8
// bytes, no pointer), and the small fields are packed at the end.
type session struct {
	srv *Server
	lg  atomic.Pointer[zap.Logger] // built on first use by logger()
	// raw is the accepted socket, closed by run, and conn is raw or TLS
	// over raw. A plain session lets go of both while parked (see detach):
	// they change only then, under mu, and other goroutines read them only
	// under mu (rawConn, sockInfo).
	raw  net.Conn
	conn net.Conn
	// peer is the client's address, kept for logs and SHOW CLIENTS while
	// raw is let go.
	peer net.Addr
	rd   *protocol.Reader // client frames
	wr   *protocol.Writer // to the client: run's while unlinked, the pump's while linked
	// handshake holds what only the login needs, until the relay takes the
	// bytes read past it (see takePending).
	handshake *loginState
	// rare holds what few sessions use (see rareState).
	rare  *rareState
	entry *poolEntry

	// stmts is what the client prepared (nil: nothing yet). Only its
	// owner (run, or the relay loop) touches it.
	stmts *clientStmts

	// mu guards the link state. Held only for bookkeeping, never for I/O.
	mu sync.Mutex
	// failedOwed: see status (guarded by mu; here, in the padding after
	// mu, to keep the session in its size class).
	failedOwed bool
	// nStmts is how many statement names stmts holds, as the last change
	// left it (countStmts), for SHOW CLIENTS' prepared_statements (also
	// in the padding after mu).
	nStmts   atomic.Int32
	server   *pool.ServerConn // linked server, nil between transactions
	q        ring             // what the server still owes, in order
	dead     error            // the pump lost the server or the client
	pumpDone chan struct{}    // closed when the current pump exits
	// serverFatal keeps the message of a FATAL error the server sent before
	// closing, for the error the client gets instead. Guarded by mu.
	serverFatal *string
	params      paramList
	paramKeys   []string
	// paramsKey encodes params (recomputed when paramsDirty) so a server
	// already synced to the same set needs no work. Guarded by mu.
	paramsKey unique.Handle[string]

	// wmu is held by run while it writes to the linked server, so the pump
	// never releases a server in the middle of a write.
	wmu sync.Mutex

	user, database string
	appName        string // application_name of the startup packet (SHOW CLIENTS)

	id          uint64
	connectedAt mono
	linkedAt    mono // when the current server was linked (run writes, pump reads after link)
	// queryStart is when the running query began (zero while the server
	// is idle); guarded by mu.
	queryStart mono
	// idleDeadline is the client read deadline setReadDeadline armed (zero:
	// none). run only.
	idleDeadline mono
	// Read routing, guarded by mu: when the client last finished a
	// transaction on the primary (read_your_writes: a mono), or, with
	// read_your_writes_lsn, the primary's WAL insert position right after
	// it (0 if none). A database routes by one or the other, so they share
	// the field (the session, one per client, stays in its size class); a
	// reload that switches between them reads the other's value as one
	// that keeps reads on the primary until the next write, or none.
	lastWrite uint64

	pid, key uint32
	// Parking (park_linux.go): fd is the TCP socket's descriptor (-1: never
	// parked, e.g. the admin console; changes only with raw); activeTick the
	// parker's sweep count when the session last read a request.
	fd         int32
	activeTick atomic.Uint32
	// flags holds the events other goroutines post to the session and the
	// state its owner publishes (see events.go).
	flags atomic.Uint32
	// cancels counts cancel requests being delivered to the linked server
	// (only it: attach starts it at 0, cancelDone counts down only the
	// linked server's); releaseDeferred marks a finished transaction whose
	// server waits for them; pumpKick tells the pump that the wait is
	// over, or that notifications wait for a client tied to its idle
	// server (Notify). Guarded by mu.
	cancels int32

	// Small fields, packed.
	tls        bool
	handedOff  bool // the connection was a peer link, now the fleet's
	admin      bool // an admin console session (set by admitAdmin)
	adminFull  bool // an admin_users console session (else stats_users)
	txnMode    bool
	pinOnState bool
	// execTag, when not 0, replaces the answer to the next Execute the
	// session relays (see execTagFrames). Only run touches it.
	execTag uint8
	// Guarded by mu: the last ReadyForQuery status from the server; session
	// state tying the client to its server; run taking the server back from
	// the pump; a server query_timeout gave up on (its read deadline is set
	// to stop the relay); see cancels; see paramsKey; the server skips
	// every request up to the first Sync in the ring, or the next one sent
	// (skipToSync); the first Sync or simple Query owed, or the next Sync
	// sent, ends a request whose error the client has (failedOwed).
	status          byte
	pinned          bool
	stopping        bool
	serverStuck     bool
	releaseDeferred bool
	pumpKick        bool
	paramsDirty     bool
	serverSkips     bool
	// Where the linked server is and whether the transaction was routed as
	// a read; guarded by mu. readOnlyAlias: connected through
	// readonly_alias, set at startup.
	onReplica, txReadOnly bool
	readOnlyAlias         bool
	// inline marks a loan whose responses the session goroutine relays
	// itself; no pump is running. run only.
	inline    bool
	listening bool // subscribed through the pool's listener; run only
	// noDeadline records that run cleared the client read deadline and
	// armed none since, so the next clear can be skipped. run only.
	noDeadline bool
	// resumed tells a run the parker started to keep the deadline the old
	// one armed.
	resumed bool
	// The relay loop's (loop_linux.go), its owner's only: what the session
	// waits for while the loop serves it (0: the loop does not), how many
	// more requests it must read on a goroutine before it may enter the
	// loop, and for how many more transactions the loop waits for its
	// next request without trying a read first (see turn).
	loop       uint8
	loopCredit uint8
	// Which of mu and wmu the session's owner (its goroutine, or the relay
	// loop) and its pump hold in send, attach and relayServer, for their
	// recovers (releaseHeld); each written only by whoever it names.
	ownerHeld, pumpHeld heldLocks
	loopSkips           uint8
	// replays counts the queries restoring the client's parameters on the
	// linked server (syncParams) that it has not answered yet, or is
	// replayRefused from the server's refusal of one to the end of the
	// loan: meanwhile every request goes behind a guard (guardReplay).
	// Guarded by mu.
	replays uint8
	// slot is the session's place in the parker's set while its client
	// socket is in the epoll set (-1: none). Guarded by the parker's mu.
	slot int32
}

// Entry credits (session.loopCredit): requests a session reads on its
// goroutine before it enters the relay loop (loop_linux.go). A new client
// has none: its first request is the loop's, even if it is its only one
// (pgbench -C, a serverless function): a goroutine would park for the
// server's answer and be woken again, where the loop only registers the
// server's socket (the connection storm cost 20-30% more CPU per
// transaction with two credits than with none; bench/README.md).
// A session the loop handed back, or could not take yet, reads
// loopEntryCredit requests on its goroutine first: what brought it back
// (an error, a statement that changes session state) is there. A parked
// session skips them: the loop adopts it at its next request (adopt).
// loopNever is for sessions the loop cannot serve (TLS, session mode, ...,
// or relay_loop off when they logged in).
const (
	loopEntryCredit = 2
	loopNever       = 255
)

// loginState is what a session needs only while it logs in.
type loginState struct {
	// in reads the client during login (see beginLogin); pending holds
	// what it read past the login, for rd.
	in      *bufio.Reader
	pending []byte
	// authOK holds the end of a successful authentication exchange until
	// it can go out with the next write (see sendAuthOK).
	authOK []byte
	// refusal, when set at accept, turns the client away once its startup
	// packet is read (see refusal).
	refusal *refusal
	// peerCerts are the client's TLS certificates, for the cert method;
	// binding the tls-server-end-point of the certificate pgferry
	// presented, for SCRAM-SHA-256-PLUS.
	peerCerts []*x509.Certificate
	binding   []byte
	// scratch holds one authentication message at a time, the one being
	// sent or the one just read (see sendAuth, readAuthMessage); kept from
	// one login to the next while small.
	scratch []byte
	// A login on the relay loop (looplogin_linux.go): buf holds what the
	// loop read and has not taken yet, and early what it read before it
	// handed the login to a goroutine (see beginLogin); st is the startup
	// packet; method, cred, known, entry what loginPlan found; step what the loop
	// waits for, with the md5 salt or the SCRAM exchange.
	buf, early []byte
	st         *protocol.Startup
	method     string
	cred       auth.Credential
	known      bool
	entry      *poolEntry
	scram      *auth.SCRAMServer
	salt       [4]byte
	step       uint8
}

// rareState is what few sessions use: timers of the timeouts that are
// configured, prepared statements that change session state, a password
// kept for reloads, a listening client's mailbox. It is allocated on first
// use by the session's own goroutine, under mu (see ensureRare), so any
// goroutine holding mu may read it, and run may without.
type rareState struct {
	// query_timeout and transaction_timeout; querySeq counts armed query
	// timeouts. Guarded by mu.
	queryTimer, txnTimer *time.Timer
	querySeq             uint64
	// waitTimer times query_wait_timeout, made on the first wait; peeker
	// checks whether a queued client is still there. run only.
	waitTimer *time.Timer
	peeker    *protocol.Peeker
	// idleTimer resumes a session parked with client_idle_timeout armed
	// when it is due. Set by the session before it parks, read by the
	// parker.
	idleTimer *time.Timer
	// stateStmts and statePortals map the client's statements and portals
	// that change session state (SET of a tracked parameter, RESET,
	// DISCARD, LISTEN, UNLISTEN) to what they do, so that executing one
	// through the extended protocol is tracked as the same text in a
	// simple Query is. run only.
	stateStmts, statePortals map[string]*classify.Class
	// poolName is the database entry the session's pools belong to when it
	// is not the client's database (readonly_alias), and clientPassword the
	// password the client revealed (plain auth only), kept to find the new
	// pools after a reload replaced them. Set at login.
	poolName, clientPassword string
	// ticket is the pool queue place of a session the relay loop queued
	// (loopQueued) since queuedAt. Its owner's only.
	ticket   pool.Ticket
	queuedAt mono
	// carried is the ticket of a queued session the relay loop handed to
	// a goroutine (evict), or whose grant it could not lend without a
	// wait (takeGrant): the goroutine waits on with it, in its place
	// (takeCarried), or gives it up if the session ends first (finish).
	// Its owner's only.
	carried pool.Ticket
	// lent is a server a wait (waitForServer) or a grant (takeGrant) got
	// from the pool and attach has not linked yet: a panic in between
	// destroys it (dropLent), where it would have been nobody's. A loan
	// taken without a wait is linked before anything else runs, and is
	// not noted. Its owner's only.
	lent *pool.ServerConn
	// waitStop stops the session goroutine's wait for a server
	// (waitForServer) for a kill, which sends on it (without blocking:
	// one slot) while waiting says the goroutine waits; the wait drains
	// it as it ends, so a stop it did not take reaches no later wait.
	// Made at the session's first wait and kept for the next ones (a wait
	// allocates nothing). Both guarded by mu.
	waitStop chan struct{}
	waiting  bool
	// loginStop cancels the wait of a client logging in (loginContext)
	// for a kill, which calls it; nil while none runs. Guarded by mu.
	loginStop func()
	// tentative holds the client's SET/RESET of unreported parameters
	// until the requests that make them are answered (see settle), and
	// the savepoint statements sent while any waits (see applyChange).
	// stmtSeq and stmtN count the statements answered of request number
	// stmtSeq (see stmtAnswered). Guarded by mu.
	tentative []paramChange
	stmtSeq   uint64
	stmtN     int
	// scsLive is standard_conforming_strings as a change of it that the
	// server ran and has not reported yet left it ("": none; see scsAt),
	// scsBefore as it was before request number scsSeq changed it.
	// Guarded by mu.
	scsLive, scsBefore string
	scsSeq             uint64
	// setsSent says that the client recorded a change in tentative and
	// has not yet seen it empty since (setsPending): its savepoint
	// statements are looked at. Its owner's only.
	setsSent bool
	// mailbox holds notifications (raw frames) waiting for the end of the
	// client's transaction. Guarded by mu; a session makes its rareState
	// before it subscribes (session.subscribe), so Notify finds it.
	mailbox []byte
	// listen notes the LISTENs sent to the server until they run or are
	// skipped (listenlinked.go). Guarded by mu.
	listen listenBook
	// refusal answers each request sent behind a replay the server
	// refused, until the loan ends (replayRefusedBy). Guarded by mu.
	refusal []byte
	// replayWait, if not nil, is closed when the server answers the
	// replay: a request waits for it (awaitReplay). Guarded by mu.
	replayWait chan struct{}
}

// ensureRare returns the session's rareState, making it if needed. Only
// the session's goroutine calls it; mu must not be held.
func (ss *session) ensureRare() *rareState {
	if ss.rare == nil {
		ss.mu.Lock()
		ss.rare = &rareState{}
		ss.mu.Unlock()
	}
	return ss.rare
}

// ensureRareLocked is ensureRare with mu held.
func (ss *session) ensureRareLocked() *rareState {
	if ss.rare == nil {
		ss.rare = &rareState{}
	}
	return ss.rare
}

// clientPassword is the password the client revealed (plain auth only).
func (ss *session) clientPassword() string {
	if ss.rare != nil {
		return ss.rare.clientPassword
	}
	return ""
}

// poolName is the database entry the session's pools belong to.
func (ss *session) poolName() string {
	if ss.rare != nil && ss.rare.poolName != "" {
		return ss.rare.poolName
	}
	return ss.database
}

// wipeTLS overwrites the keys of a TLS 1.3 session that ended.
func (ss *session) wipeTLS() {
	if c, ok := ss.conn.(*tls13.Conn); ok {
		c.Wipe()
	}
}

// serveLoggedIn relays for a logged-in client until it leaves. It owns the
// connection, the client count and the WaitGroup slot taken at accept.
func (ss *session) serveLoggedIn() {
	ss.fd = -1
	if !ss.admin {
		ss.fd = int32(socketFD(ss.raw)) // under TLS too: the parker waits on the TCP socket
		if ss.fd >= 0 && !ss.srv.parker.start() {
			ss.fd = -1
		}
	}
	ss.activeTick.Store(ss.srv.parker.tick.Load())
	ss.srv.register(ss)
	if ss.fd >= 0 {
		ss.srv.parker.admitted(ss)
	}
	if ss.debugEnabled() {
		ss.logger().Debug("client connected")
	}
	ss.run()
}

// run serves the client until it leaves, or until the session parks or
// enters the relay loop (errParked): then this goroutine ends, and the
// parker starts a new run when the client sends something or the session
// is woken, or the loop serves it.
func (ss *session) run() {
	if err := ss.serveRecovering(); err != errParked {
		ss.end(err)
	}
}

// end ends the session with err (see finish) and lets go of what it holds:
// the last act of its owner, a run or the relay loop's hand-off.
func (ss *session) end(err error) {
	defer func() {
		ss.srv.unregister(ss)
		ss.flags.Or(stEnded)
		if ss.rd != nil {
			ss.rd.Release()
			ss.wr.Release()
		}
		ss.closeSocket()
		ss.wipeTLS()
		ss.srv.clients.Add(-1)
		ss.srv.wg.Done()
	}()
	defer ss.recoverPanic() // a panic in finish
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
			err = ss.failedByPanic(r)
		}
	}()
	if ss.admin {
		return ss.serveAdmin()
	}
	return ss.serve()
}

var errInternal = protocol.Fatal(protocol.SQLStateInternalError, "internal error in pgferry")

// failedByPanic lets go of the locks the owner held when it panicked with
// r (releaseHeld), logs and counts the panic, destroys a server lent and
// not linked yet (dropLent), marks the linked server's state unknown
// (finish destroys it) and returns the error the session ends with.
func (ss *session) failedByPanic(r any) error {
	ss.releaseHeld(&ss.ownerHeld)
	ss.panicked("session panicked", r)
	ss.dropLent()
	ss.mu.Lock()
	ss.status = protocol.TxFailed
	ss.mu.Unlock()
	return errInternal
}

// recoverPanic keeps a panic in one session from killing the process.
func (ss *session) recoverPanic() {
	if r := recover(); r != nil {
		ss.panicked("session panicked", r)
	}
}

// panicked logs a panic recovered in the session (msg, with the stack)
// and counts it (Snapshot.Panics: every one is a bug).
func (ss *session) panicked(msg string, r any) {
	ss.srv.panics.Add(1)
	ss.logger().Error(msg, zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
}

// sendFatal writes a FATAL error straight to the client (no server linked).
// A plain session that ends detached (a panic between detach and reattach)
// has no conn to write it to.
func (ss *session) sendFatal(e *protocol.Error) {
	if ss.conn == nil {
		return
	}
	ss.conn.SetWriteDeadline(time.Now().Add(time.Second))
	ss.conn.Write(e.AppendFrame(ss.takeAuthOK()))
}

// handshakes recycles the login state of sessions, with its reader's
// buffer, from one login to the next.
var handshakes = sync.Pool{New: func() any { return &loginState{in: bufio.NewReaderSize(nil, loginBufSize)} }}

// dropHandshake ends the session's login state, giving it back for the
// next login.
func (ss *session) dropHandshake() {
	h := ss.handshake
	if h == nil {
		return
	}
	ss.handshake = nil
	// Both buffers may have held a password or a token: wiped, whether
	// they are kept for the next login or not.
	h.in.Reset(zeros{})
	h.in.Peek(loginBufSize) // overwrites the reader's buffer
	h.in.Reset(nil)
	scratch := h.scratch[:0]
	clear(scratch[:cap(scratch)])
	if cap(scratch) > maxKeptScratch {
		scratch = nil // an Entra token, say: not kept for every login
	}
	buf := h.buf[:0]
	clear(buf[:cap(buf)])
	if cap(buf) > loginBufSize {
		buf = nil
	}
	clear(h.early)
	*h = loginState{in: h.in, scratch: scratch, buf: buf}
	handshakes.Put(h)
}

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}

// maxKeptScratch bounds the authentication buffer a login state keeps for
// the next login: SCRAM's messages fit, long passwords and tokens do not.
const maxKeptScratch = 512

// loginBufSize bounds one read during login: a startup packet, a SASL
// message or a password usually fits, so that its length and body cost one
// read system call instead of two.
const loginBufSize = 512

func (e *relayedError) Error() string { return e.err.Error() }
func (e *relayedError) Unwrap() error { return e.err }

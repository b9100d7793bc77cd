// A client's login: SSL negotiation, the startup packet, authentication
// (clientauth.go), the pool it will use, and the greeting.

package router

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/tls13"
	"github.com/pgferry/pgferry/protocol"
)

// login runs the startup and authentication exchange. It reports whether
// the client is logged in; on failure the client has been told why.
func (ss *session) login(cfg *configs.Config) bool {
	if d := cfg.ClientLoginTimeout.Std(); ss.handshake.refusal != nil {
		if d <= 0 || d > refuseTimeout {
			d = refuseTimeout
		}
		ss.raw.SetDeadline(time.Now().Add(d))
	} else if d > 0 {
		// From the accept: a login the relay loop handed over has had
		// some of its time.
		ss.raw.SetDeadline(ss.connectedAt.Time().Add(d))
	}
	ss.beginLogin()
	err := ss.startup(cfg)
	ss.endLogin()
	if err == nil {
		ss.raw.SetDeadline(time.Time{})
		if ss.has(evKill) {
			ss.raw.SetDeadline(pastDeadline) // (a kill's, just cleared: the session ends at once)
		}
		return true
	}
	err = ss.loginKilled(err)
	var pe *protocol.Error
	var re *relayedError
	if ss.handshake.refusal != nil {
		// Refused clients are counted by reason, not logged one by one: a
		// flood would flood the log.
		if errors.Is(err, ss.handshake.refusal.err) || isTimeout(err) {
			ss.sendFatal(ss.handshake.refusal.err)
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
		ss.sendFatal(errLoginTimeout)
	}
	if !errors.Is(err, errCancelDone) && !protocol.IsDisconnect(err) {
		ss.logger().Info("client login failed", zap.Error(err))
	}
	return false
}

var (
	errCancelDone   = errors.New("cancel request handled")
	errLoginTimeout = protocol.Fatal(protocol.SQLStateProtocolViolation, "client_login_timeout")
)

// startup runs SSL negotiation, the startup message and authentication,
// then greets the client.
func (ss *session) startup(cfg *configs.Config) error {
	var st *protocol.Startup
	for first := true; ; first = false {
		if first && !ss.tls {
			done, err := ss.directTLS()
			if err != nil {
				return err
			}
			if done {
				continue
			}
		}
		var err error
		st, err = protocol.ReadStartup(ss.handshake.in)
		if err != nil {
			ss.srv.reject("protocol")
			return err
		}
		switch st.Code {
		case protocol.SSLRequestCode:
			if ss.tls {
				return protocol.Fatal(protocol.SQLStateProtocolViolation, "SSLRequest received on an encrypted connection")
			}
			ct := ss.srv.ctls.Load()
			if ct == nil || (ss.handshake.refusal != nil && ss.handshake.refusal.plainOnly) {
				if _, err := ss.conn.Write([]byte{'N'}); err != nil {
					return err
				}
				continue
			}
			if ss.handshake.in.Buffered() > 0 {
				// Bytes sent before the TLS handshake would otherwise be
				// taken as sent over TLS (CVE-2021-23214 in PostgreSQL).
				return protocol.Fatal(protocol.SQLStateProtocolViolation, "received unencrypted data after SSL request")
			}
			if _, err := ss.conn.Write([]byte{'S'}); err != nil {
				return err
			}
			if err := ss.serveTLS(ct, ss.raw, false); err != nil {
				return err
			}
			continue
		case protocol.GSSENCRequestCode:
			if _, err := ss.conn.Write([]byte{'N'}); err != nil {
				return err
			}
			continue
		case protocol.CancelRequestCode:
			if ss.handshake.refusal == nil || ss.handshake.refusal.forwardCancel {
				ss.srv.routeCancel(st.CancelPID, st.CancelKey)
			}
			return errCancelDone
		case protocol.PeerLinkCode:
			f := ss.srv.fleet
			if f == nil || ss.tls || (ss.handshake.refusal != nil && !ss.handshake.refusal.forwardCancel) {
				return protocol.Fatal(protocol.SQLStateFeatureNotSupported, "this pgferry shares no fleet budget (fleet_max_db_connections, fleet_max_user_connections)")
			}
			buffered, _ := ss.handshake.in.Peek(ss.handshake.in.Buffered())
			ss.raw.SetDeadline(time.Time{})
			f.Accept(ss.raw, bytes.Clone(buffered))
			ss.handedOff = true
			return errCancelDone
		}
		break
	}
	if r := ss.handshake.refusal; r != nil {
		if !r.exemptAdmin || !adminDatabases[startupDatabase(st)] {
			return r.err
		}
		// The admin console may still log in, with the usual time.
		ss.handshake.refusal = nil
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
	if !ss.tls && cfg.ClientTLSRequired() && !isUnixSocket(ss.peer) {
		ss.srv.reject("tls")
		e := protocol.Fatal(protocol.SQLStateInvalidAuthorization, "SSL required")
		e.Detail = "pgferry is configured with client_tls_sslmode = " + cfg.ClientTLSSSLMode + "; connect with sslmode=require or stronger"
		return e
	}
	if replicationRequested(cfg, st) {
		ss.srv.reject("protocol")
		e := protocol.Fatal(protocol.SQLStateProtocolViolation, "unsupported startup parameter: replication")
		e.Detail = "pgferry does not serve replication connections; connect to the server directly"
		return e
	}
	ss.user, ss.database = startupNames(st)
	if !adminDatabases[ss.database] {
		ss.srv.registerLogin(ss) // kills reach it from here (loginkill.go)
	}
	password, err := ss.authenticate(cfg)
	if err != nil {
		return err
	}
	if adminDatabases[ss.database] {
		ss.appName = intern(st.Get("application_name")) // SHOW CLIENTS of the console reads it
		return ss.admitAdmin(cfg)
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
	if poolName != ss.database || password != "" {
		r := ss.ensureRare()
		if poolName != ss.database {
			r.poolName = poolName
		}
		r.clientPassword = password
	}
	entry, err := ss.srv.poolFor(cfg, poolName, db, serverUser, password)
	if err != nil {
		return poolError(poolName, err)
	}
	ss.entry = entry
	ss.txnMode = entry.mode == poolModeTransaction
	ss.pinOnState = cfg.PinOnSessionState

	if err := ss.initParams(cfg, st); err != nil {
		return err
	}
	if err := ss.confirmStartup(cfg, st); err != nil {
		return err // (paramsconfirm.go: a value no server takes)
	}
	if ss.readOnlyAlias {
		ss.setParam(readOnlyParam, "on") // (over the client's own: keepAliasReadOnly)
		ss.paramsDirty = true
	}
	ss.pid, ss.key = ss.srv.newCancelKey()
	if err := ss.greet(); err != nil {
		return err
	}
	entry.stats.clientLogins.Add(1)
	return nil
}

// tlsHandshakeRecord is the first byte of a TLS handshake record (RFC 8446,
// 5.1: ContentType handshake), which no startup packet starts with: its
// length would be over 369 MB.
const tlsHandshakeRecord = 0x16

// alpnPostgreSQL is the ALPN protocol name of PostgreSQL's protocol
// (PostgreSQL 17, libpq's PG_ALPN_PROTOCOL), which a client starting TLS
// directly must offer.
const alpnPostgreSQL = "postgresql"

// errDirectTLSWithoutALPN ends a direct TLS connection whose client did not
// negotiate ALPN "postgresql".
var errDirectTLSWithoutALPN = errors.New("direct TLS connection without ALPN protocol postgresql")

// directTLS serves a client that starts TLS at once, without an SSLRequest
// (PostgreSQL 17's sslnegotiation=direct; PgBouncer 1.25 takes it too): if
// the first byte the client sent opens a TLS handshake record and client
// TLS is on, it runs the handshake and reports true. As PostgreSQL does
// (backend_startup.c, ProcessSSLStartup), the client must have negotiated
// ALPN "postgresql": one that did not is told nothing, its connection just
// closes (a client speaking another protocol over TLS, which a
// cross-protocol attack would relay here, cannot read PostgreSQL's
// errors); PgBouncer 1.25.2 lets it in. Without client TLS (or for a
// client refused for its address) it reports false, and the bytes are
// read as a startup packet whose length is refused.
func (ss *session) directTLS() (bool, error) {
	in := ss.handshake.in
	b, err := in.Peek(1)
	if err != nil || b[0] != tlsHandshakeRecord {
		return false, nil // (ReadStartup meets the error again)
	}
	ct := ss.srv.ctls.Load()
	if ct == nil || (ss.handshake.refusal != nil && ss.handshake.refusal.plainOnly) {
		return false, nil
	}
	// The reader holds the start of the handshake: what the relay loop
	// read before it handed the login over (beginLogin; at most
	// loginBufSize, which the reader's first fill takes whole) or its own
	// first read. The handshake reads it first, then the socket.
	b, _ = in.Peek(in.Buffered())
	pre := &prefixedConn{Conn: ss.raw, pre: bytes.Clone(b)}
	in.Discard(len(b))
	if err := ss.serveTLS(ct, pre, true); err != nil {
		return false, err
	}
	return true, nil
}

// serveTLS runs the TLS handshake with the client over raw, the client's
// socket (or, for direct TLS, a prefixedConn over it), and makes the
// session's conn the TLS connection. direct requires ALPN "postgresql".
func (ss *session) serveTLS(ct *clientTLS, raw net.Conn, direct bool) error {
	tap := tls13.NewTap(raw)
	tc := ct.cfg
	t := tls.Server(tap, tc)
	if err := t.Handshake(); err != nil {
		tap.Wipe()
		ss.srv.reject("tls")
		return fmt.Errorf("client TLS handshake: %w", err)
	}
	st := t.ConnectionState()
	if direct && st.NegotiatedProtocol != alpnPostgreSQL {
		tap.Wipe()
		ss.srv.reject("tls")
		return errDirectTLSWithoutALPN
	}
	ss.handshake.peerCerts = st.PeerCertificates
	ss.handshake.binding = ct.binding
	ss.faultAt("tls")
	// A TLS 1.3 session carries on without crypto/tls's connection
	// and its buffers (internal/tls13); TLS 1.2 keeps it.
	if c := tap.Takeover(t, tc); c != nil {
		if p, ok := raw.(*prefixedConn); ok && len(p.pre) == 0 {
			c.Resume(ss.raw) // (the handshake read all of the prefix)
		}
		ss.conn = c
	} else {
		ss.conn = t
	}
	ss.tls = true
	ss.handshake.in.Reset(ss.conn)
	return nil
}

// prefixedConn reads pre, then the connection.
type prefixedConn struct {
	net.Conn
	pre []byte
}

func (c *prefixedConn) Read(b []byte) (int, error) {
	if len(c.pre) == 0 {
		return c.Conn.Read(b)
	}
	n := copy(b, c.pre)
	c.pre = c.pre[n:]
	return n, nil
}

// poolError is what a client whose pool could not be made is told: err if
// it is meant for the client, or else a FATAL naming the database, without
// err's text (file paths of pgferry's host), which the log keeps.
func poolError(database string, err error) error {
	if _, ok := errors.AsType[*protocol.Error](err); ok {
		return err
	}
	return fmt.Errorf("%w: %w", protocol.Fatal(protocol.SQLStateConnectionFailure, "pgferry could not set up its connections to the server for database "+database), err)
}

// isUnixSocket reports whether a client came on the unix socket. TLS is
// required of network clients only: libpq never encrypts a unix socket
// connection, and neither PostgreSQL nor PgBouncer ("require SSL except on
// unix socket", client.c) asks it to.
func isUnixSocket(peer net.Addr) bool {
	_, ok := peer.(*net.UnixAddr)
	return ok
}

// replicationRequested reports whether a startup packet asks for a
// walsender (replication = true or database), which pgferry does not
// serve: given a pool's ordinary connection instead, a replication client
// would fail later on a syntax error, or not at all where a command means
// something else outside replication. As PgBouncer before 1.23 did, the
// login is refused, unless ignore_startup_parameters lists the key.
func replicationRequested(cfg *configs.Config, st *protocol.Startup) bool {
	v := st.Get("replication")
	if v == "" || slices.ContainsFunc(cfg.IgnoreStartupParameters, func(k string) bool { return strings.EqualFold(k, "replication") }) {
		return false
	}
	switch strings.ToLower(v) {
	case "false", "off", "no", "0", "f", "n":
		return false
	}
	return true
}

// startupNames returns the user and the database a startup packet names,
// as the session keeps them: shared copies, not pieces of the packet (see
// intern).
func startupNames(st *protocol.Startup) (user, database string) {
	return intern(st.Get("user")), intern(startupDatabase(st))
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

// beginLogin points the login reader at the client, after what the relay
// loop read before it handed the login over (loginHandoff).
func (ss *session) beginLogin() {
	h := ss.handshake
	if len(h.early) == 0 {
		h.in.Reset(ss.conn)
		return
	}
	h.in.Reset(io.MultiReader(bytes.NewReader(h.early), ss.conn))
}

// endLogin keeps what the login reader read past the login (a client may
// send its first query without waiting for ReadyForQuery) for the relay's
// Reader. It is safe to call twice.
func (ss *session) endLogin() {
	h := ss.handshake
	if h == nil {
		return
	}
	if n := h.in.Buffered(); n > 0 && h.pending == nil {
		b, _ := h.in.Peek(n)
		h.pending = append([]byte(nil), b...)
	}
	h.in.Reset(nil)
}

// takePending moves the bytes endLogin kept into rd, which ends the
// handshake: its state goes back for the next login. Any queued
// authentication messages must have been taken before.
func (ss *session) takePending(rd *protocol.Reader) error {
	h := ss.handshake
	if h == nil {
		return nil
	}
	err := rd.Prefill(h.pending)
	ss.dropHandshake()
	return err
}

// greet sends the server's parameters (with the client's own values for
// those it set), the proxy-issued BackendKeyData and ReadyForQuery.
func (ss *session) greet() error {
	auth := ss.takeAuthOK()
	g, err := ss.welcome()
	if err != nil {
		return err
	}
	out := make([]byte, 0, len(auth)+len(g.frames)+64+len(ss.params)*32)
	out = append(out, auth...)
	out = g.appendTo(out, ss.params.lookup)
	out = protocol.AppendBackendKeyData(out, ss.pid, ss.key)
	out = protocol.AppendReadyForQuery(out, protocol.TxIdle)
	_, err = ss.conn.Write(out)
	return err
}

// welcome returns the greeting of the pool's servers, logging in once if
// no server connection has been seen yet.
func (ss *session) welcome() (*greeting, error) {
	e := ss.entry
	if w, g := e.setWelcome(nil); w != nil {
		return g, nil
	}
	cfg := ss.srv.cfg.Load()
	ctx, cancel := ss.waitContext(cfg)
	defer cancel()
	sc, err := e.pool.Acquire(ctx)
	if err != nil {
		return nil, ss.acquireError(err)
	}
	w := make(map[string]string, len(sc.Params))
	for k, v := range sc.Params {
		w[k] = v
	}
	e.pool.Release(sc)
	_, g := e.setWelcome(w)
	return g, nil
}

// Client authentication by auth_type (and auth_hba_file): trust, plain,
// md5, SCRAM-SHA-256 and client certificates.

package router

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/auth"
	"github.com/pgferry/pgferry/auth/hba"
	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/protocol"
)

// authenticate checks the client's password per auth_type. It returns the
// cleartext password when the exchange revealed it (plain auth), which may
// serve as the server password when the database entry has none.
func (ss *session) authenticate(cfg *configs.Config) (string, error) {
	method, err := ss.authMethod(cfg)
	if err != nil {
		return "", err
	}
	fail := ss.authFailed
	if err := ss.srv.throttle.wait(ss); err != nil {
		return "", err
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
	if !known && !adminDatabases[ss.database] {
		var err error
		ctx, cancel := ss.loginContext(0) // (lookupUser bounds it)
		cred, known, err = ss.srv.lookupUser(ctx, cfg, ss.database, ss.user)
		cancel()
		if err != nil {
			if k := ss.killed(); k != nil {
				return "", k
			}
			if ss.srv.cut.Err() != nil {
				return "", errDraining // cut at shutdown's deadline, as a login's wait for a server is
			}
			// The server's error goes to the log only: it can name tables,
			// roles and addresses, and the client is not logged in.
			ss.logger().Warn("auth_query lookup failed", zap.Error(err))
			return "", protocol.Fatal(protocol.SQLStateConnectionFailure,
				"pgferry could not look up user "+strconv.Quote(ss.user)+" with auth_query (the reason is in pgferry's log)")
		}
	}
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
			ss.srv.throttle.succeeded(ss.peer)
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
		return "", ss.checkMD5(known, cred, salt, pw)
	}
	// SCRAM-SHA-256 (also for md5 with a SCRAM or plain secret, as PgBouncer).
	var binding []byte
	if ss.tls {
		binding = ss.handshake.binding
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
	var mechs [64]byte
	if err := ss.sendAuth(authSASL, sc.AppendMechanisms(mechs[:0])); err != nil {
		return "", err
	}
	body, err := ss.readAuthMessage("SASL initial response")
	if err != nil {
		return "", err
	}
	first, err := ss.scramStart(sc, body)
	if err != nil {
		return "", err
	}
	if err := ss.sendAuth(authSASLContinue, first); err != nil {
		return "", err
	}
	resp, err := ss.readAuthMessage("SASL response") // the data alone
	if err != nil {
		return "", err
	}
	return "", ss.scramFinish(sc, known, cred, resp)
}

// authFailed counts and throttles a failed authentication and returns the
// error the client gets.
func (ss *session) authFailed() error {
	ss.srv.reject("auth")
	ss.srv.throttle.failed(ss.peer)
	return protocol.Fatal(protocol.SQLStateInvalidPassword, fmt.Sprintf("password authentication failed for user %q", ss.user))
}

// checkMD5 checks the client's answer pw to the md5 challenge salt and, if
// it is right, queues AuthenticationOk.
func (ss *session) checkMD5(known bool, cred auth.Credential, salt [4]byte, pw string) error {
	if !known || !auth.VerifyMD5(ss.user, cred, salt, pw) {
		return ss.authFailed()
	}
	ss.srv.throttle.succeeded(ss.peer)
	ss.queueAuthOK()
	return nil
}

// scramStart takes the client's SASLInitialResponse body (the mechanism,
// then the length of the data, -1 for none, and the data) and returns the
// server-first message.
func (ss *session) scramStart(sc *auth.SCRAMServer, body []byte) ([]byte, error) {
	mech, rest, ok := protocol.CString(body)
	if !ok || len(rest) < 4 {
		return nil, errBadAuthMessage()
	}
	n, data := int32(binary.BigEndian.Uint32(rest)), rest[4:]
	switch {
	case n == -1 && len(data) == 0:
		data = nil
	case n < 0 || int(n) != len(data):
		return nil, errBadAuthMessage()
	}
	first, err := sc.Start(string(mech), data)
	if err != nil {
		return nil, scramErr(err, ss.authFailed)
	}
	return first, nil
}

// scramFinish takes the client's final SASL message and, if its proof
// holds, queues SASLFinal and AuthenticationOk.
func (ss *session) scramFinish(sc *auth.SCRAMServer, known bool, cred auth.Credential, resp []byte) error {
	final, err := sc.Finish(resp)
	if err != nil {
		return scramErr(err, ss.authFailed)
	}
	if keys, ok := sc.PassThroughKeys(); ok && known && cred.Kind() == auth.KindSCRAM {
		// The client proved it holds the auth_file's SCRAM secret: its keys
		// can log in to a server holding the same secret (pass-through).
		ss.srv.passKeys.Store(ss.user, &passKeys{cred: cred, keys: keys})
	}
	ss.srv.throttle.succeeded(ss.peer)
	ss.handshake.authOK = protocol.AppendAuthentication(ss.handshake.authOK, authSASLFinal, final)
	ss.queueAuthOK()
	return nil
}

// authMethod returns the authentication method for the client: auth_type,
// or with auth_type "hba" the method of the first auth_hba_file line that
// applies; "entra" instead when its database or user says client_auth =
// "entra". A client no line admits, or a reject line, is refused here with
// PostgreSQL's SQLSTATE (28000) and a message shaped like its own, Entra
// or not: the file says who may connect from where, and client_auth only
// replaces how an admitted client proves who it is.
func (ss *session) authMethod(cfg *configs.Config) (string, error) {
	entra := ss.clientAuthEntra(cfg)
	if cfg.AuthType != "hba" {
		if entra {
			return "entra", nil
		}
		return cfg.AuthType, nil
	}
	method, rule, ok, host := ss.hbaMethod()
	if method != "" {
		if ss.debugEnabled() {
			ss.logger().Debug("auth_hba_file line matched", zap.String("hba_file", rule.File), zap.Int("hba_line", rule.Line), zap.String("method", string(rule.Method)), zap.Bool("entra", entra))
		}
		if entra {
			return "entra", nil
		}
		return method, nil
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

// hbaMethod returns the method of the first auth_hba_file line that applies
// to the client ("" if none does, or it rejects), that line and whether one
// applied, and the client's host as messages name it. It only looks.
func (ss *session) hbaMethod() (method string, rule hba.Rule, ok bool, host string) {
	rules := ss.srv.hba.Load()
	c := hba.Conn{TLS: ss.tls, Database: ss.database, User: ss.user, Local: true}
	host = "[local]"
	if ta, isTCP := ss.peer.(*net.TCPAddr); isTCP {
		c.Local, c.Addr = false, ta.AddrPort().Addr()
		host = c.Addr.Unmap().String()
	}
	if rules != nil {
		rule, ok = rules.Match(c)
	}
	switch {
	case !ok || rule.Method == hba.MethodReject:
		return "", rule, ok, host
	case rule.Method == hba.MethodPassword:
		return "plain", rule, ok, host
	}
	return string(rule.Method), rule, ok, host
}

// certLogin admits a client whose verified TLS client certificate names it:
// the certificate's common name must equal the user name, as PostgreSQL's
// cert method requires without a user name map. The TLS handshake already
// verified the certificate against client_tls_ca_file.
func (ss *session) certLogin() error {
	certs := ss.handshake.peerCerts
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
	h := ss.handshake
	h.scratch = protocol.AppendAuthentication(h.scratch[:0], code, payload)
	_, err := ss.conn.Write(h.scratch)
	return err
}

// readAuthMessage reads the client's next message, which must be a
// password or SASL message ('p', want names it for the error), and returns
// its body. It reads exactly the message, nothing after it. The body is
// the login's scratch buffer: valid until the next sendAuth or
// readAuthMessage.
func (ss *session) readAuthMessage(want string) ([]byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(ss.handshake.in, hdr[:]); err != nil {
		return nil, protocolErr(err)
	}
	n := int(int32(binary.BigEndian.Uint32(hdr[1:]))) - 4
	if hdr[0] != protocol.MsgPassword {
		return nil, protocol.Fatal(protocol.SQLStateProtocolViolation, "expected "+want+", got message type "+strconv.Quote(string(hdr[0])))
	}
	if n < 0 || n > maxAuthMessage {
		return nil, errBadAuthMessage()
	}
	h := ss.handshake
	h.scratch = slices.Grow(h.scratch[:0], n)[:n]
	if _, err := io.ReadFull(h.in, h.scratch); err != nil {
		return nil, protocolErr(err)
	}
	return h.scratch, nil
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
	ss.handshake.authOK = protocol.AppendAuthentication(ss.handshake.authOK, authOK, nil)
}

// takeAuthOK returns the queued authentication messages (SASLFinal and
// AuthenticationOk) for the caller to send first, and forgets them.
func (ss *session) takeAuthOK() []byte {
	if ss.handshake == nil {
		return nil
	}
	b := ss.handshake.authOK
	ss.handshake.authOK = nil
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
	if protocol.IsDisconnect(err) || isTimeout(err) {
		return err
	}
	return errBadAuthMessage()
}

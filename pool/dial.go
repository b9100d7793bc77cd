package pool

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgferry/pgferry/auth"
	"github.com/pgferry/pgferry/internal/sockio"
	"github.com/pgferry/pgferry/protocol"
)

// PasswordSource yields the password for one server login. It is called for
// every new server connection so that rotating secrets (Entra ID tokens)
// reach new logins while existing connections keep working.
type PasswordSource interface {
	Password(ctx context.Context) (string, error)
}

// MD5HashSource is implemented by a PasswordSource that may hold only a
// stored md5 hash ("md5" + hex(md5(password + user))), as an auth_file
// entry copied from pg_authid does: a server's md5 challenge is answered
// from the hash. When MD5Hash reports false, Password is used.
type MD5HashSource interface {
	MD5Hash() (string, bool)
}

// SCRAMKeySource is implemented by a PasswordSource that may hold SCRAM
// keys instead of a password (pass-through: recovered from a client's SCRAM
// login against the same secret); a server's SCRAM request is answered with
// them. When SCRAMKeys reports false, Password is used.
type SCRAMKeySource interface {
	SCRAMKeys() (auth.SCRAMKeys, bool)
}

// PasswordRejecter is implemented by a PasswordSource whose passwords can
// stop working before the source knows, as an Entra ID token the server no
// longer accepts does. When a server refuses a login made with one of its
// passwords (SQLSTATE 28P01 or 28000), Dial calls Rejected with that
// password and retries the login once with whatever Password returns next.
// Rejected must be cheap and safe for concurrent use.
type PasswordRejecter interface {
	Rejected(password string)
}

// PasswordError is a login that failed because its PasswordSource returned
// an error. The pool does not cache it for LoginRetry: the source keeps its
// own backoff and knows as soon as it has recovered.
type PasswordError struct{ Err error }

func (e *PasswordError) Error() string { return e.Err.Error() }

// Unwrap returns Err.
func (e *PasswordError) Unwrap() error { return e.Err }

// StaticPassword is a PasswordSource for a fixed password.
type StaticPassword string

// Password implements PasswordSource.
func (s StaticPassword) Password(context.Context) (string, error) { return string(s), nil }

// String hides the password from logs and %v.
func (s StaticPassword) String() string { return "[redacted]" }

// SSL modes for server connections, as in libpq.
const (
	SSLDisable    = "disable"
	SSLAllow      = "allow"
	SSLPrefer     = "prefer"
	SSLRequire    = "require"
	SSLVerifyCA   = "verify-ca"
	SSLVerifyFull = "verify-full"
)

// DialConfig says how to open and log in one server connection.
type DialConfig struct {
	// Hosts are tried in order; an entry may be "host:port" to override
	// Port. With RequireWritable, a host whose server is in recovery is
	// skipped (libpq's target_session_attrs=read-write).
	Hosts []string
	Port  int
	// Database and User are sent in the StartupMessage.
	Database, User string
	// Password is asked for each login; nil means no password is known.
	Password PasswordSource
	// SSLMode is one of the SSL* constants. TLS holds the root CAs and
	// client certificate; ServerName is set per host (SNI and verify-full).
	SSLMode string
	TLS     *tls.Config
	// AllowCleartext permits answering a cleartext password request on a
	// connection without TLS.
	AllowCleartext bool
	// ConnectTimeout bounds dial plus login.
	ConnectTimeout time.Duration
	// Params are extra startup parameters (application_name, ...).
	Params []protocol.Param
	// RequireWritable skips servers that report in_hot_standby=on.
	RequireWritable bool
	// Resolver looks up host names afresh on every dial so DNS-based
	// failover is followed; nil uses net.DefaultResolver.
	Resolver *net.Resolver
	// Detached keeps the socket out of Go's netpoller (sockio.Detach),
	// for connections an event loop lends (router's relay_loop): one
	// registered there wakes Go's idle thread on every answer, whoever
	// reads it. A goroutine that waits on a detached connection holds an
	// OS thread meanwhile. Where the platform has no Detach it is ignored.
	Detached bool
}

// ServerError is an ErrorResponse the server sent; from a login, Frame
// holds the message as received, so it can be relayed to clients
// untouched.
type ServerError = protocol.ServerError

// ErrReadOnlyServer is returned when RequireWritable is set and no host is
// writable.
var ErrReadOnlyServer = errors.New("server is read-only (in recovery)")

// Dial opens a server connection and logs in. It honours ctx and
// ConnectTimeout; the returned connection is ready for queries. A login
// refused with a password from a PasswordRejecter is retried once (see
// PasswordRejecter).
func Dial(ctx context.Context, cfg *DialConfig) (*ServerConn, error) {
	sc, err := dial(ctx, cfg)
	if err != nil {
		return nil, &DialError{Err: err}
	}
	return sc, nil
}

// A DialError is why Dial could not open a logged-in server connection:
// every error Dial returns is one, wrapping the cause (errors.As finds a
// ServerError, errors.Is a timeout or a refused connection in it). A
// client waiting for a connection is told a dial's failure as such, not
// as its own wait running out, even when the dial timed out.
type DialError struct{ Err error }

func (e *DialError) Error() string { return e.Err.Error() }
func (e *DialError) Unwrap() error { return e.Err }

// dial is Dial, its errors unwrapped.
func dial(ctx context.Context, cfg *DialConfig) (*ServerConn, error) {
	if cfg.ConnectTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.ConnectTimeout)
		defer cancel()
	}
	sc, err := dialHosts(ctx, cfg)
	var rej *rejectedPasswordError
	if !errors.As(err, &rej) {
		return sc, err
	}
	r, ok := cfg.Password.(PasswordRejecter)
	if !ok || ctx.Err() != nil {
		return nil, rej.ServerError
	}
	r.Rejected(rej.password)
	sc, err = dialHosts(ctx, cfg)
	if errors.As(err, &rej) {
		return nil, rej.ServerError // the error must not keep the password
	}
	return sc, err
}

// rejectedPasswordError is a login the server refused as unauthorised
// after pgferry sent password; it never leaves Dial.
type rejectedPasswordError struct {
	*ServerError
	password string
}

func (e *rejectedPasswordError) Unwrap() error { return e.ServerError }

func dialHosts(ctx context.Context, cfg *DialConfig) (*ServerConn, error) {
	var firstErr error
	for _, host := range cfg.Hosts {
		sc, err := dialHost(ctx, cfg, host)
		if err == nil {
			return sc, nil
		}
		if firstErr == nil || errors.Is(firstErr, ErrReadOnlyServer) {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	if firstErr == nil {
		firstErr = errors.New("no host configured")
	}
	return nil, firstErr
}

func dialHost(ctx context.Context, cfg *DialConfig, host string) (*ServerConn, error) {
	addr := net.JoinHostPort(host, strconv.Itoa(cfg.Port))
	// A host entry may carry its own port ("db2:5433"), as libpq's
	// host/port lists allow.
	if h, _, err := net.SplitHostPort(host); err == nil {
		addr, host = host, h
	}
	d := net.Dialer{Resolver: cfg.Resolver, KeepAlive: 30 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial server %s: %w", addr, err)
	}
	raw = sockio.Wrap(raw)
	if cfg.Detached && sockio.DetachAvailable {
		d, err := sockio.Detach(raw)
		if err != nil {
			raw.Close()
			return nil, fmt.Errorf("dial server %s: %w", addr, err)
		}
		raw = d
	}
	sc, err := login(ctx, cfg, host, addr, raw)
	if err != nil {
		raw.Close()
		var se *ServerError
		if cfg.SSLMode == SSLAllow && errors.As(err, &se) && ctx.Err() == nil {
			// libpq's allow: a server that refused the connection without
			// TLS (a pg_hba.conf with hostssl lines only) is asked again
			// with TLS (fe-connect.c, the retry of "allow" after an error
			// during authentication); the error is then the second try's.
			retry := *cfg
			retry.SSLMode = SSLPrefer
			return dialHost(ctx, &retry, host)
		}
		return nil, err
	}
	return sc, nil
}

func login(ctx context.Context, cfg *DialConfig, host, addr string, raw net.Conn) (*ServerConn, error) {
	// Blocked socket I/O ignores contexts; turn the deadline into a conn one.
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		raw.SetDeadline(dl)
	}

	conn := raw
	tlsOn := false
	if cfg.SSLMode != SSLDisable && cfg.SSLMode != "" && cfg.SSLMode != SSLAllow {
		if _, err := raw.Write(protocol.AppendSSLRequest(nil)); err != nil {
			return nil, ctxErr(ctx, fmt.Errorf("send SSLRequest to %s: %w", addr, err))
		}
		var b [1]byte
		if _, err := raw.Read(b[:]); err != nil {
			return nil, ctxErr(ctx, fmt.Errorf("read SSLRequest answer from %s: %w", addr, err))
		}
		switch b[0] {
		case 'S':
			tc := tls.Client(raw, tlsConfigFor(cfg, host))
			if err := tc.HandshakeContext(ctx); err != nil {
				return nil, ctxErr(ctx, fmt.Errorf("TLS handshake with %s: %w", addr, err))
			}
			conn, tlsOn = tc, true
		case 'N':
			if cfg.SSLMode != SSLPrefer {
				return nil, fmt.Errorf("server %s does not support TLS but sslmode is %s", addr, cfg.SSLMode)
			}
		default:
			return nil, fmt.Errorf("server %s answered SSLRequest with %q", addr, b[0])
		}
	}

	params := make([]protocol.Param, 0, 3+len(cfg.Params))
	params = append(params, protocol.Param{Key: "user", Value: cfg.User}, protocol.Param{Key: "database", Value: cfg.Database})
	params = append(params, cfg.Params...)
	if _, err := conn.Write(protocol.AppendStartupMessage(nil, params)); err != nil {
		return nil, ctxErr(ctx, fmt.Errorf("send startup to %s: %w", addr, err))
	}

	sc := &ServerConn{Conn: conn, raw: raw, Addr: addr, Host: host, TLS: tlsOn, Params: make(map[string]string, 16), peeker: protocol.NewPeeker(raw)}
	sc.Rd = protocol.NewReader(conn)
	if err := sc.authenticate(ctx, cfg); err != nil {
		sc.Rd.Release()
		return nil, ctxErr(ctx, err)
	}
	// The watch of ctx stops before the deadline is cleared: once ctx has
	// ended (the time ran out, the pool closed) as the login did, its past
	// deadline may land after the clear, and the connection's first
	// borrower would read nothing.
	if !stop() {
		sc.Rd.Release()
		return nil, ctxErr(ctx, fmt.Errorf("log in to %s: %w", addr, ctx.Err()))
	}
	raw.SetDeadline(time.Time{})
	if cfg.RequireWritable && sc.Params["in_hot_standby"] == "on" {
		sc.Rd.Release()
		conn.Write(protocol.AppendTerminate(nil))
		return nil, fmt.Errorf("server %s: %w", addr, ErrReadOnlyServer)
	}
	sc.Wr = protocol.NewWriter(conn)
	now := time.Now()
	sc.created, sc.lastUsed = now, now
	return sc, nil
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
	}
	return err
}

func tlsConfigFor(cfg *DialConfig, host string) *tls.Config {
	var c *tls.Config
	if cfg.TLS != nil {
		c = cfg.TLS.Clone()
	} else {
		c = &tls.Config{}
	}
	if c.MinVersion == 0 {
		c.MinVersion = tls.VersionTLS12 // (unless cfg.TLS sets its own)
	}
	c.ServerName = host
	switch cfg.SSLMode {
	case SSLVerifyFull:
		// The chain, and the host name as libpq matches it (peername.go),
		// which Go's own check does not: it ignores the common name.
		roots := c.RootCAs
		c.InsecureSkipVerify = true
		c.VerifyPeerCertificate = func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
			leaf, err := verifyChain(rawCerts, roots)
			if err != nil {
				return err
			}
			return verifyPeerName(leaf, host)
		}
	case SSLVerifyCA:
		// Chain only, as libpq: verify against the roots without the name.
		roots := c.RootCAs
		c.InsecureSkipVerify = true
		c.VerifyPeerCertificate = func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
			_, err := verifyChain(rawCerts, roots)
			return err
		}
	default:
		c.InsecureSkipVerify = true
	}
	return c
}

// authenticate runs the login exchange up to ReadyForQuery.
func (sc *ServerConn) authenticate(ctx context.Context, cfg *DialConfig) error {
	var scram *auth.SCRAMClient
	var sent string // the password given to the server, if any
	password := func() (string, error) {
		if cfg.Password == nil {
			return "", fmt.Errorf("server %s asked for a password but none is configured for user %q", sc.Addr, cfg.User)
		}
		pw, err := cfg.Password.Password(ctx)
		if err != nil {
			return "", &PasswordError{Err: err}
		}
		sent = pw
		return pw, nil
	}
	var out []byte
	for {
		frame, err := sc.Rd.Next()
		if err != nil {
			return fmt.Errorf("read login reply from %s: %w", sc.Addr, err)
		}
		typ, body := frame[0], protocol.Body(frame)
		switch typ {
		case protocol.MsgAuthentication:
			if len(body) < 4 {
				return fmt.Errorf("server %s sent a malformed authentication request", sc.Addr)
			}
			code := binary.BigEndian.Uint32(body)
			out = out[:0]
			switch code {
			case 0: // AuthenticationOk
				continue
			case 3: // CleartextPassword
				if !sc.TLS && !cfg.AllowCleartext {
					return fmt.Errorf("server %s asked for a cleartext password over a connection without TLS; set sslmode to require or allow_cleartext_password", sc.Addr)
				}
				pw, err := password()
				if err != nil {
					return err
				}
				out = encode(out, &pgproto3.PasswordMessage{Password: pw})
			case 5: // MD5Password
				if len(body) != 8 {
					return fmt.Errorf("server %s sent a malformed MD5 request", sc.Addr)
				}
				if hs, ok := cfg.Password.(MD5HashSource); ok {
					if h, ok := hs.MD5Hash(); ok {
						var salt [4]byte
						copy(salt[:], body[4:])
						out = encode(out, &pgproto3.PasswordMessage{Password: auth.MD5ResponseFromHash(h, salt)})
						break
					}
				}
				pw, err := password()
				if err != nil {
					return err
				}
				var salt [4]byte
				copy(salt[:], body[4:])
				out = encode(out, &pgproto3.PasswordMessage{Password: auth.MD5Response(cfg.User, pw, salt)})
			case 10: // SASL
				if !hasMechanism(body[4:], "SCRAM-SHA-256") {
					return fmt.Errorf("server %s offers no SASL mechanism pgferry supports (SCRAM-SHA-256)", sc.Addr)
				}
				if ks, ok := cfg.Password.(SCRAMKeySource); ok {
					if keys, ok := ks.SCRAMKeys(); ok {
						scram = auth.NewSCRAMClientWithKeys(keys)
					}
				}
				if scram == nil {
					pw, err := password()
					if err != nil {
						return err
					}
					scram = auth.NewSCRAMClient(pw)
				}
				out = encode(out, &pgproto3.SASLInitialResponse{AuthMechanism: scram.Mechanism(), Data: scram.ClientFirst()})
			case 11: // SASLContinue
				if scram == nil {
					return fmt.Errorf("server %s sent SASLContinue out of order", sc.Addr)
				}
				final, err := scram.ClientFinal(body[4:])
				if err != nil {
					return fmt.Errorf("SCRAM with %s: %w", sc.Addr, err)
				}
				out = encode(out, &pgproto3.SASLResponse{Data: final})
			case 12: // SASLFinal
				if scram == nil {
					return fmt.Errorf("server %s sent SASLFinal out of order", sc.Addr)
				}
				if err := scram.VerifyServerFinal(body[4:]); err != nil {
					return fmt.Errorf("SCRAM with %s: %w", sc.Addr, err)
				}
				continue
			default:
				return fmt.Errorf("server %s requested authentication method %d, which pgferry does not support", sc.Addr, code)
			}
			if _, err := sc.Conn.Write(out); err != nil {
				return fmt.Errorf("send authentication to %s: %w", sc.Addr, err)
			}
		case protocol.MsgParameterStatus:
			k, rest, ok := protocol.CString(body)
			v, _, ok2 := protocol.CString(rest)
			if ok && ok2 {
				sc.Params[string(k)] = string(v)
			}
		case protocol.MsgBackendKeyData:
			if len(body) >= 8 {
				sc.PID = binary.BigEndian.Uint32(body)
				sc.Key = binary.BigEndian.Uint32(body[4:])
			}
		case protocol.MsgNoticeResponse, 'v': // notices, NegotiateProtocolVersion
		case protocol.MsgErrorResponse:
			_, code, msg := protocol.ParseErrorFields(frame)
			se := &ServerError{Frame: append([]byte(nil), frame...), Code: string(code), Message: string(msg)}
			if sent != "" && (se.Code == protocol.SQLStateInvalidPassword || se.Code == protocol.SQLStateInvalidAuthorization) {
				return &rejectedPasswordError{ServerError: se, password: sent}
			}
			return se
		case protocol.MsgReadyForQuery:
			return nil
		default:
			return fmt.Errorf("server %s sent unexpected message %q during login", sc.Addr, typ)
		}
	}
}

func encode(dst []byte, m pgproto3.FrontendMessage) []byte {
	out, err := m.Encode(dst)
	if err != nil {
		return dst
	}
	return out
}

func hasMechanism(list []byte, name string) bool {
	for len(list) > 0 && list[0] != 0 {
		m, rest, ok := protocol.CString(list)
		if !ok {
			return false
		}
		if string(m) == name {
			return true
		}
		list = rest
	}
	return false
}

// verifyChain checks the server's chain against roots without checking the
// host name (sslmode=verify-ca; verify-full then checks it) and returns the
// server's certificate.
func verifyChain(rawCerts [][]byte, roots *x509.CertPool) (*x509.Certificate, error) {
	if len(rawCerts) == 0 {
		return nil, errors.New("server sent no certificate")
	}
	certs := make([]*x509.Certificate, len(rawCerts))
	for i, der := range rawCerts {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("parse server certificate: %w", err)
		}
		certs[i] = c
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter}); err != nil {
		return nil, err
	}
	return certs[0], nil
}

// SendCancel opens a new connection to the server at addr and sends a
// CancelRequest with the server's own key, negotiating TLS as cfg says.
func SendCancel(ctx context.Context, cfg *DialConfig, host, addr string, pid, key uint32) error {
	d := net.Dialer{Resolver: cfg.Resolver}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("dial server %s for cancel: %w", addr, err)
	}
	defer raw.Close()
	if dl, ok := ctx.Deadline(); ok {
		raw.SetDeadline(dl)
	}
	// A ctx without a deadline still ends the exchange when it is done.
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	conn := raw
	if cfg.SSLMode != SSLDisable && cfg.SSLMode != "" && cfg.SSLMode != SSLAllow {
		if _, err := raw.Write(protocol.AppendSSLRequest(nil)); err != nil {
			return err
		}
		var b [1]byte
		if _, err := raw.Read(b[:]); err != nil {
			return err
		}
		if b[0] == 'S' {
			tc := tls.Client(raw, tlsConfigFor(cfg, host))
			if err := tc.HandshakeContext(ctx); err != nil {
				return fmt.Errorf("TLS handshake with %s for cancel: %w", addr, err)
			}
			conn = tc
		}
	}
	if _, err := conn.Write(protocol.AppendCancelRequest(nil, pid, key)); err != nil {
		return fmt.Errorf("send cancel to %s: %w", addr, err)
	}
	// The server closes the connection when done; wait for that so the
	// cancel is delivered before we return.
	var b [1]byte
	conn.Read(b[:])
	return nil
}

package admin

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/protocol"
)

// ErrDone ends a console session quietly: the client said Terminate, went
// away or was killed.
var ErrDone = fmt.Errorf("admin console session ended: %w", net.ErrClosed)

// MaxMessage bounds a console message; commands are one short line. The
// caller sets it on the Reader it passes in Config.
const MaxMessage = 1 << 20

// Console server parameters, sent after AuthenticationOk.
var params = [][2]string{
	{"server_version", "15.0 (pgferry)"},
	{"server_encoding", "UTF8"},
	{"client_encoding", "UTF8"},
	{"DateStyle", "ISO, MDY"},
	{"TimeZone", "UTC"},
	{"integer_datetimes", "on"},
	{"standard_conforming_strings", "on"},
	{"is_superuser", "off"},
}

// Config is what a Console needs.
type Config struct {
	// Backend is the pooler the console shows and controls.
	Backend Backend
	// Session is the session that owns the client connection.
	Session Session
	// Full is set for a member of admin_users; a member of stats_users
	// may only SHOW.
	Full bool
	// Reader and Writer carry the client connection. The caller owns them
	// and their connection; the console only reads and writes.
	Reader *protocol.Reader
	Writer *protocol.Writer
	// Logger is the session's logger.
	Logger *zap.Logger
	// AppName is the client's application_name ("" when it sent none);
	// PID and Key the cancel key the client is told.
	AppName  string
	PID, Key uint32
}

// Console is one admin console client session. It is not safe for
// concurrent use: only the owning session's goroutine uses it.
type Console struct {
	b    Backend
	ss   Session
	full bool
	rd   *protocol.Reader
	wr   *protocol.Writer
	log  *zap.Logger

	appName  string
	pid, key uint32
}

// New returns a Console for cfg.
func New(cfg Config) *Console {
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	return &Console{b: cfg.Backend, ss: cfg.Session, full: cfg.Full, rd: cfg.Reader, wr: cfg.Writer, log: log,
		appName: cfg.AppName, pid: cfg.PID, key: cfg.Key}
}

// Serve greets the client (after out, what its authentication still has
// to say) and answers its commands until it leaves. It returns ErrDone
// when the client terminates, goes away or is killed; a FATAL
// *protocol.Error for the client when the session must end otherwise (a
// malformed message, shutdown); another error when the connection fails.
func (c *Console) Serve(out []byte) error {
	for _, p := range params {
		out = protocol.AppendParameterStatus(out, p[0], p[1])
	}
	if name := c.appName; name != "" {
		out = protocol.AppendParameterStatus(out, "application_name", name)
	}
	out = protocol.AppendBackendKeyData(out, c.pid, c.key)
	out = protocol.AppendReadyForQuery(out, protocol.TxIdle)
	c.wr.SetBuffer(out)
	if err := c.wr.Flush(); err != nil {
		return c.ioErr(err)
	}
	// skipping is set after an extended-protocol message was refused: the
	// rest of that batch is dropped up to its Sync, as PostgreSQL does after
	// an error (protocol-flow.html, "Extended Query").
	skipping := false
	for {
		frame, err := c.rd.Next()
		if err != nil {
			if isTimeout(err) {
				if err := c.onWake(); err != nil {
					return err
				}
				continue
			}
			var tl *protocol.TooLargeError
			if errors.As(err, &tl) || errors.Is(err, protocol.ErrBadLength) {
				return protocol.Fatal(protocol.SQLStateProtocolViolation, "invalid admin console message")
			}
			return c.ioErr(err)
		}
		switch frame[0] {
		case protocol.MsgTerminate:
			return ErrDone
		case protocol.MsgQuery:
			skipping = false
			sql, _, _ := protocol.CString(protocol.Body(frame))
			if err := c.query(string(sql)); err != nil {
				return err
			}
			c.appendRFQ()
		case protocol.MsgSync:
			skipping = false
			c.appendRFQ()
		case protocol.MsgFlush:
		case protocol.MsgFunctionCall:
			c.appendError(protocol.NewError(protocol.SQLStateProtocolViolation, "the admin console supports only simple queries"))
			c.appendRFQ()
		case protocol.MsgParse, protocol.MsgBind, protocol.MsgDescribe, protocol.MsgExecute, protocol.MsgClose:
			if !skipping {
				c.appendError(protocol.NewError(protocol.SQLStateProtocolViolation, "the admin console supports only simple queries"))
				skipping = true
			}
		default:
			return protocol.Fatal(protocol.SQLStateProtocolViolation, fmt.Sprintf("invalid frontend message type %q", frame[0]))
		}
		if err := c.wr.Flush(); err != nil {
			return c.ioErr(err)
		}
	}
}

// ioErr maps a failed client read or write to what ends the session: a
// deadline only ever fires here because of kill or wake, and the session
// must not mistake it for client_login_timeout.
func (c *Console) ioErr(err error) error {
	if c.ss.Killed() || isTimeout(err) || protocol.IsDisconnect(err) {
		return ErrDone
	}
	return err
}

// onWake handles an interrupted read: a KILL, or Shutdown waking
// sessions. The console arms no idle timeout, so every timeout is one of
// those (or a stale wake, which is harmless).
func (c *Console) onWake() error {
	if c.ss.Killed() {
		return ErrDone
	}
	c.ss.ClearWake()
	if c.b.Draining() {
		return errShuttingDown
	}
	return nil
}

// errShuttingDown ends a console session when pgferry shuts down.
var errShuttingDown = protocol.Fatal(protocol.SQLStateAdminShutdown, "pgferry is shutting down")

func isTimeout(err error) bool {
	ne, ok := errors.AsType[net.Error](err)
	return ok && ne.Timeout()
}

func (c *Console) appendRFQ() {
	c.wr.SetBuffer(protocol.AppendReadyForQuery(c.wr.Buffer(), protocol.TxIdle))
}

func (c *Console) appendError(e *protocol.Error) {
	c.wr.SetBuffer(e.AppendFrame(c.wr.Buffer()))
}

func (c *Console) appendComplete(tag string) {
	c.wr.SetBuffer(protocol.AppendCommandComplete(c.wr.Buffer(), tag))
}

// adminError builds the ERROR PgBouncer sends for console mistakes
// (SQLSTATE 08P01, its fallback code).
func adminError(format string, args ...any) *protocol.Error {
	return protocol.NewError(protocol.SQLStateProtocolViolation, fmt.Sprintf(format, args...))
}

// errAdminNeeded refuses a control command to a stats_users client.
func errAdminNeeded() *protocol.Error { return adminError("admin access needed") }

// query runs one console command and appends its response (not the
// ReadyForQuery). It returns an error only when the session must end.
func (c *Console) query(sql string) error {
	words := strings.Fields(strings.TrimSuffix(strings.TrimSpace(sql), ";"))
	invalid := adminError("invalid command '%s', use SHOW HELP;", sql)
	if len(words) == 0 {
		c.appendError(invalid)
		return nil
	}
	verb := strings.ToUpper(words[0])
	args := words[1:]
	for i, a := range args {
		args[i] = unquoteIdent(a)
	}
	switch verb {
	case "SHOW":
		if len(args) != 1 {
			c.appendError(invalid)
			return nil
		}
		if ce := c.log.Check(zap.DebugLevel, "admin command"); ce != nil {
			ce.Write(zap.String("command", "SHOW "+strings.ToUpper(args[0])))
		}
		if !c.show(strings.ToUpper(args[0])) {
			c.appendError(invalid)
		}
		return nil
	case "PAUSE", "RESUME", "RECONNECT", "KILL", "RELOAD", "SHUTDOWN", "WAIT_CLOSE", "KILL_CLIENT":
	case "SUSPEND", "DISABLE", "ENABLE", "SET":
		if !c.full {
			c.appendError(errAdminNeeded())
			return nil
		}
		c.appendError(protocol.NewError(protocol.SQLStateFeatureNotSupported, verb+" is not supported by pgferry"))
		return nil
	default:
		c.appendError(invalid)
		return nil
	}
	if !c.full {
		c.appendError(errAdminNeeded())
		return nil
	}
	maxArgs := 1
	if verb == "RELOAD" {
		maxArgs = 0
	}
	if len(args) > maxArgs {
		c.appendError(invalid)
		return nil
	}
	db := ""
	if len(args) == 1 {
		db = args[0]
	}
	c.log.Info("admin command", zap.String("command", verb), zap.String("target_database", db))
	var err error
	switch verb {
	case "PAUSE":
		err = c.pause(db)
	case "RESUME":
		err = c.resume(db)
	case "RECONNECT":
		err = c.reconnect(db)
	case "KILL":
		err = c.kill(db)
	case "RELOAD":
		err = c.reload()
	case "SHUTDOWN":
		switch strings.ToUpper(db) {
		case "", "WAIT_FOR_SERVERS":
			err = c.shutdown()
		case "WAIT_FOR_CLIENTS":
			err = protocol.NewError(protocol.SQLStateFeatureNotSupported, "SHUTDOWN WAIT_FOR_CLIENTS is not supported by pgferry: "+
				"its SHUTDOWN lets the transactions in flight finish (up to shutdown_timeout), not the clients")
		default:
			err = invalid
		}
	case "WAIT_CLOSE":
		err = c.waitClose(db)
	case "KILL_CLIENT":
		err = c.killClient(db)
	}
	var pe *protocol.Error
	switch {
	case err == nil:
		c.appendComplete(verb)
	case errors.As(err, &pe) && !pe.IsFatal():
		c.appendError(pe)
	default:
		return err
	}
	return nil
}

// unquoteIdent strips SQL identifier quotes ("my db" is not supported, as
// in PgBouncer's console, but "app" is).
func unquoteIdent(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return strings.ReplaceAll(s[1:len(s)-1], `""`, `"`)
	}
	return s
}

package router

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
)

// The admin console is PgBouncer's virtual database "pgbouncer" (pgferry
// also answers to "pgferry"): a simple-Query-only pseudo server whose
// commands show and control the pooler (docs/pgbouncer-reference.md
// section 10). Texts and SQLSTATEs of its errors are PgBouncer 1.18's, so
// scripts and exporters written against PgBouncer keep working; in
// particular "admin access needed" is 08P01 (protocol_violation), which is
// what PgBouncer really sends, not 42501.

// AdminHooks are the admin console actions that belong to the program
// owning the Server rather than to the router: re-reading the config file
// and stopping the process.
type AdminHooks struct {
	// Reload re-reads the configuration file and applies it with
	// Server.Reload, returning why it could not. It runs on the admin
	// client's goroutine; nil makes RELOAD fail.
	Reload func() error
	// Shutdown starts a graceful shutdown, as SIGTERM does, and returns at
	// once. It must not wait for Server.Shutdown: that waits for every
	// session, including the admin session calling Shutdown. Nil makes
	// SHUTDOWN fail.
	Shutdown func()
}

// SetAdminHooks installs the RELOAD and SHUTDOWN actions of the admin
// console. Safe for concurrent use.
func (s *Server) SetAdminHooks(h AdminHooks) { s.hooks.Store(&h) }

func (s *Server) adminHooks() AdminHooks {
	if h := s.hooks.Load(); h != nil {
		return *h
	}
	return AdminHooks{}
}

// errAdminDone ends an admin session quietly: the client said Terminate or
// was killed (finish does not log it).
var errAdminDone = fmt.Errorf("admin console session ended: %w", net.ErrClosed)

// adminMaxMessage bounds a console message; commands are one short line.
const adminMaxMessage = 1 << 20

// Admin console server parameters, sent after AuthenticationOk.
var adminParams = [][2]string{
	{"server_version", "15.0 (pgferry)"},
	{"server_encoding", "UTF8"},
	{"client_encoding", "UTF8"},
	{"DateStyle", "ISO, MDY"},
	{"TimeZone", "UTC"},
	{"integer_datetimes", "on"},
	{"standard_conforming_strings", "on"},
	{"is_superuser", "off"},
}

// admitAdmin checks that an authenticated client of the admin console may
// use it and makes the session a console session; the session goroutine
// then serves it (serveAdmin) as it serves any database's client.
func (ss *session) admitAdmin(cfg *configs.Config) error {
	full := slices.Contains(cfg.AdminUsers, ss.user)
	if !full && !slices.Contains(cfg.StatsUsers, ss.user) {
		ss.srv.reject("admin")
		return protocol.Fatal(protocol.SQLStateProtocolViolation, "not allowed")
	}
	if ss.srv.isDraining() {
		return errDraining
	}
	ss.admin, ss.adminFull = true, full
	ss.pid, ss.key = ss.srv.newCancelKey()
	return nil
}

// serveAdmin serves a client of the admin console until it leaves. It
// returns errAdminDone when the client terminates or is killed, another
// error when the connection fails.
func (ss *session) serveAdmin() error {
	ss.logger().Info("admin console client connected", zap.Bool("admin", ss.adminFull))
	c := &adminConsole{ss: ss, srv: ss.srv, full: ss.adminFull, rd: protocol.NewReader(ss.conn), wr: protocol.NewWriter(ss.conn)}
	c.rd.MaxMessage = adminMaxMessage
	defer c.rd.Release()
	defer c.wr.Release()
	authOK := ss.takeAuthOK() // before takePending ends the handshake
	if err := ss.takePending(c.rd); err != nil {
		return err
	}
	return c.serve(authOK)
}

// adminConsole is one admin client session. Only the session's goroutine
// uses it.
type adminConsole struct {
	ss   *session
	srv  *Server
	full bool // admin_users member; false: stats_users (SHOW only)
	rd   *protocol.Reader
	wr   *protocol.Writer
}

// serve greets the client (after out, what its authentication still has
// to say) and answers its commands.
func (c *adminConsole) serve(out []byte) error {
	ss := c.ss
	for _, p := range adminParams {
		out = protocol.AppendParameterStatus(out, p[0], p[1])
	}
	if name := ss.appName; name != "" {
		out = protocol.AppendParameterStatus(out, "application_name", name)
	}
	out = protocol.AppendBackendKeyData(out, ss.pid, ss.key)
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
			return errAdminDone
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
// deadline only ever fires here because of kill or wake, and session.run
// must not mistake it for client_login_timeout.
func (c *adminConsole) ioErr(err error) error {
	if c.ss.has(evKill) || isTimeout(err) || isEOF(err) {
		return errAdminDone
	}
	return err
}

// onWake handles an interrupted read: a KILL, or Shutdown waking
// sessions. The console arms no idle timeout, so every timeout is one of
// those (or a stale wake, which is harmless).
func (c *adminConsole) onWake() error {
	ss := c.ss
	if ss.has(evKill) {
		return errAdminDone
	}
	// Clear the deadline before consuming the request: a wake that lands in
	// between sets the deadline again and is seen on the next read.
	ss.raw.SetReadDeadline(time.Time{})
	ss.flags.And(^evWake)
	if c.srv.isDraining() {
		return protocol.Fatal(protocol.SQLStateAdminShutdown, "pgferry is shutting down")
	}
	return nil
}

func (c *adminConsole) appendRFQ() {
	c.wr.SetBuffer(protocol.AppendReadyForQuery(c.wr.Buffer(), protocol.TxIdle))
}

func (c *adminConsole) appendError(e *protocol.Error) {
	c.wr.SetBuffer(e.AppendFrame(c.wr.Buffer()))
}

func (c *adminConsole) appendComplete(tag string) {
	c.wr.SetBuffer(protocol.AppendCommandComplete(c.wr.Buffer(), tag))
}

// adminError builds the ERROR PgBouncer sends for console mistakes
// (SQLSTATE 08P01, its fallback code).
func adminError(format string, args ...any) *protocol.Error {
	return protocol.NewError(protocol.SQLStateProtocolViolation, fmt.Sprintf(format, args...))
}

// query runs one console command and appends its response (not the
// ReadyForQuery). It returns an error only when the session must end.
func (c *adminConsole) query(sql string) error {
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
	var err error
	switch verb {
	case "SHOW":
		if len(args) != 1 {
			c.appendError(invalid)
			return nil
		}
		if c.ss.debugEnabled() {
			c.ss.logger().Debug("admin command", zap.String("command", "SHOW "+strings.ToUpper(args[0])))
		}
		if !c.show(strings.ToUpper(args[0])) {
			c.appendError(invalid)
		}
		return nil
	case "PAUSE", "RESUME", "RECONNECT", "KILL", "RELOAD", "SHUTDOWN", "WAIT_CLOSE", "KILL_CLIENT":
	case "SUSPEND", "DISABLE", "ENABLE", "SET":
		if !c.full {
			c.appendError(adminError("admin access needed"))
			return nil
		}
		c.appendError(protocol.NewError(protocol.SQLStateFeatureNotSupported, verb+" is not supported by pgferry"))
		return nil
	default:
		c.appendError(invalid)
		return nil
	}
	if !c.full {
		c.appendError(adminError("admin access needed"))
		return nil
	}
	maxArgs := 1
	if verb == "RELOAD" || verb == "SHUTDOWN" {
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
	c.ss.logger().Info("admin command", zap.String("command", verb), zap.String("target_database", db))
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
		err = c.shutdown()
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

// targets returns the pools of database db, or every pool when db is
// empty. db must be configured or have a pool (a "*" entry creates pools
// under the names clients ask for).
func (c *adminConsole) targets(db string) ([]*poolEntry, error) {
	entries, _ := c.srv.lists()
	if db == "" {
		return entries, nil
	}
	var out []*poolEntry
	for _, e := range entries {
		if e.dbName == db {
			out = append(out, e)
		}
	}
	if _, ok := c.srv.cfg.Load().Databases[db]; !ok && len(out) == 0 {
		return nil, adminError("no such database: %s", db)
	}
	return out, nil
}

// pause stops lending server connections for db (or all) and waits until
// every lent connection came back and was closed, as PgBouncer's PAUSE
// does. The wait ends early if the admin client is killed or pgferry
// shuts down.
func (c *adminConsole) pause(db string) error {
	entries, err := c.targets(db)
	if err != nil {
		return err
	}
	if db == "" && len(entries) > 0 && allPaused(entries) {
		return adminError("already suspended/paused")
	}
	// Mark every pool paused first (a canceled context makes Pause return
	// at once), then wait for each to drain.
	done, cancel := context.WithCancel(context.Background())
	cancel()
	var pools []*pool.Pool
	for _, e := range entries {
		pools = append(pools, e.allPools()...)
	}
	for _, p := range pools {
		p.Pause(done)
	}
	for _, p := range pools {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			err := p.Pause(ctx)
			cancel()
			if err == nil {
				break
			}
			if c.ss.has(evKill) {
				return errAdminDone
			}
			if c.srv.isDraining() {
				return protocol.Fatal(protocol.SQLStateAdminShutdown, "pgferry is shutting down")
			}
		}
	}
	return nil
}

// allPools returns the entry's primary pool and its replica pools.
func (e *poolEntry) allPools() []*pool.Pool {
	return append([]*pool.Pool{e.pool}, e.replicaPools()...)
}

func allPaused(entries []*poolEntry) bool {
	for _, e := range entries {
		if !e.pool.Stat().Paused {
			return false
		}
	}
	return true
}

func (c *adminConsole) resume(db string) error {
	entries, err := c.targets(db)
	if err != nil {
		return err
	}
	paused := false
	for _, e := range entries {
		paused = paused || e.pool.Stat().Paused
	}
	if !paused {
		if db == "" {
			return adminError("pooler is not paused/suspended")
		}
		return adminError("database %s is not paused", db)
	}
	for _, e := range entries {
		for _, p := range e.allPools() {
			p.Resume()
		}
	}
	return nil
}

func (c *adminConsole) reconnect(db string) error {
	entries, err := c.targets(db)
	if err != nil {
		return err
	}
	for _, e := range entries {
		for _, p := range e.allPools() {
			p.Reconnect()
		}
	}
	return nil
}

// waitClose blocks until no server connection of db (or of any database)
// predates a RECONNECT, so an operator can switch the server over and know
// when every connection to the old one is gone. It gives up if pgferry
// shuts down.
func (c *adminConsole) waitClose(db string) error {
	entries, err := c.targets(db)
	if err != nil {
		return err
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		left := 0
		for _, e := range entries {
			for _, p := range e.allPools() {
				left += p.CloseNeeded()
			}
		}
		if left == 0 {
			return nil
		}
		if c.srv.isDraining() {
			return adminError("pgferry is shutting down")
		}
		<-t.C
	}
}

// killClient ends the client whose ptr (as SHOW CLIENTS lists it) is arg.
func (c *adminConsole) killClient(arg string) error {
	if arg == "" {
		return adminError("a client (its ptr from SHOW CLIENTS) is required")
	}
	id, err := strconv.ParseUint(strings.TrimPrefix(arg, "0x"), 16, 64)
	if err != nil {
		return adminError("invalid client pointer %s", arg)
	}
	_, sessions := c.srv.lists()
	for _, ss := range sessions {
		if ss.id == id && !ss.admin {
			ss.kill()
			c.ss.logger().Info("admin KILL_CLIENT", zap.Uint64("killed_conn_id", id))
			return nil
		}
	}
	return adminError("client %s not found", arg)
}

// kill drops every client of db and its server connections now. As in
// PgBouncer, db's pools stay paused until RESUME.
func (c *adminConsole) kill(db string) error {
	if db == "" {
		return adminError("a database is required")
	}
	entries, err := c.targets(db)
	if err != nil {
		return err
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for _, e := range entries {
		for _, p := range e.allPools() {
			p.Pause(done)
			p.Reconnect()
		}
	}
	_, sessions := c.srv.lists()
	n := 0
	for _, ss := range sessions {
		if !ss.admin && ss.database == db {
			ss.kill()
			n++
		}
	}
	c.ss.logger().Info("admin KILL", zap.String("target_database", db), zap.Int("clients_killed", n))
	return nil
}

func (c *adminConsole) reload() error {
	h := c.srv.adminHooks()
	if h.Reload == nil {
		c.ss.logger().Error("admin RELOAD: no reload action is configured")
		return protocol.NewError(protocol.SQLStateConfigFileError, "RELOAD failed, see logs for additional details")
	}
	if err := h.Reload(); err != nil {
		c.ss.logger().Error("admin RELOAD failed", zap.Error(err))
		return protocol.NewError(protocol.SQLStateConfigFileError, "RELOAD failed, see logs for additional details")
	}
	return nil
}

func (c *adminConsole) shutdown() error {
	h := c.srv.adminHooks()
	if h.Shutdown == nil {
		return protocol.NewError(protocol.SQLStateFeatureNotSupported, "SHUTDOWN is not available: no shutdown action is configured")
	}
	h.Shutdown()
	return nil
}

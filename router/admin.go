package router

import (
	"slices"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/version"
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router/admin"
)

// The admin console is PgBouncer's virtual database "pgbouncer" (pgferry
// also answers to "pgferry"), served by package router/admin. Here are
// what it needs of the router: admission, the session goroutine's entry
// into it, and the view of the Server it shows and controls
// (admin_view.go).

// adminDatabases are the virtual databases of the admin console; configs
// refuses a [databases] entry of those names.
var adminDatabases = configs.AdminDatabases

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

// Version returns pgferry's version (see internal/version).
func Version() string { return version.String() }

// errAdminDone ends an admin session quietly: the client said Terminate or
// was killed (finish does not log it).
var errAdminDone = admin.ErrDone

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
	log := ss.logger()
	log.Info("admin console client connected", zap.Bool("admin", ss.adminFull))
	rd, wr := protocol.NewReader(ss.conn), protocol.NewWriter(ss.conn)
	rd.MaxMessage = admin.MaxMessage
	defer rd.Release()
	defer wr.Release()
	authOK := ss.takeAuthOK() // before takePending ends the handshake
	if err := ss.takePending(rd); err != nil {
		return err
	}
	c := admin.New(admin.Config{
		Backend: adminBackend{ss.srv},
		Session: adminSession{ss},
		Full:    ss.adminFull,
		Reader:  rd,
		Writer:  wr,
		Logger:  log,
		AppName: ss.appName,
		PID:     ss.pid,
		Key:     ss.key,
	})
	return c.Serve(authOK)
}

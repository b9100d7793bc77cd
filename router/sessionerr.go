// What a session tells its client when something fails.

package router

import (
	"context"
	"errors"
	"net"
	"strings"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/auth/entra"
	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
)

// waitContext bounds a wait for a server of a client logging in (the
// pool's first login, a check of its startup parameters) by
// query_wait_timeout, shutdown's deadline and a kill (loginContext).
func (ss *session) waitContext(cfg *configs.Config) (context.Context, context.CancelFunc) {
	return ss.loginContext(cfg.QueryWaitTimeout.Std())
}

// acquireError turns a pool error into what the client is told.
func (ss *session) acquireError(err error) error {
	var se *pool.ServerError
	var lf *pool.LoginFailingError
	var te *entra.TokenError
	switch {
	case errors.Is(err, context.Canceled) && ss.killed() != nil:
		return ss.killed() // a login's wait a kill stopped (waitContext)
	case errors.Is(err, context.Canceled) && ss.srv.cut.Err() != nil:
		return errDraining // a login's wait cut at shutdown's deadline (waitContext)
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
		if se.Code == protocol.SQLStateInvalidCatalogName {
			ss.srv.forgetMissingDatabase(ss.entry)
		}
		return &relayedError{frame: se.Frame, err: err}
	case errors.Is(err, pool.ErrWaitTimeout),
		errors.Is(err, context.DeadlineExceeded) && !errors.As(err, new(*pool.DialError)):
		// (A dial that timed out is a connection failure, told below.)
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

func isTimeout(err error) bool {
	ne, ok := errors.AsType[net.Error](err)
	return ok && ne.Timeout()
}

// clientAddr is the client's address and port.
func (ss *session) clientAddr() string {
	if ss.peer == nil {
		return ""
	}
	return ss.peer.String()
}

// logger returns the session's logger with conn_id, client_addr, user and
// database. It is built on first use: most sessions never log at the
// configured level, and a zap child logger costs memory per client.
func (ss *session) logger() *zap.Logger {
	if l := ss.lg.Load(); l != nil {
		return l
	}
	fields := []zap.Field{zap.Uint64("conn_id", ss.id), zap.String("client_addr", ss.clientAddr())}
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

package router

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
)

// A dial that times out (its context's deadline passing in the TLS
// handshake or the login) is a connection failure; only a client's own
// wait running out is query_wait_timeout. Both wrap
// context.DeadlineExceeded, and which of a socket's deadline and its
// context's comes first is a race, so this is tested here rather than
// against a server that never answers.
func TestADialThatTimedOutIsAConnectionFailureNotTheClientsWaitTimeout(t *testing.T) {
	ss := &session{srv: &Server{log: zap.NewNop()}, database: "app"}
	timedOut := fmt.Errorf("%w: %w", context.DeadlineExceeded, errors.New("read SSLRequest answer from 127.0.0.1:5432: i/o timeout"))
	tests := []struct {
		name string
		err  error
		code string
		msg  string
	}{
		{"a dial that timed out", &pool.DialError{Err: timedOut}, protocol.SQLStateConnectionFailure, "pgferry could not connect to the server for database app: context deadline exceeded: read SSLRequest answer"},
		{"the client's wait", fmt.Errorf("acquire: %w", context.DeadlineExceeded), protocol.SQLStateProtocolViolation, "query_wait_timeout"},
		{"the pool's wait timeout", pool.ErrWaitTimeout, protocol.SQLStateProtocolViolation, "query_wait_timeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var pe *protocol.Error
			if !errors.As(ss.acquireError(tc.err), &pe) {
				t.Fatalf("acquireError(%v) is no protocol error", tc.err)
			}
			if pe.Code != tc.code || !strings.HasPrefix(pe.Message, tc.msg) {
				t.Fatalf("acquireError(%v) = %s %q; want %s %q...", tc.err, pe.Code, pe.Message, tc.code, tc.msg)
			}
		})
	}
}

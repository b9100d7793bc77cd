package router_test

// Helpers for tests that send the same frames to PostgreSQL and to
// pgferry and compare what each answers.

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// said reads responses up to and including the n-th ReadyForQuery, as
// until does, each error with its message ("E:<code>:<message>") and
// each CommandComplete with its tag ("C:<tag>").
func (c *rawClient) said(n int) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []string
	for n > 0 {
		msg, err := c.pc.ReceiveMessage(ctx)
		if err != nil {
			c.t.Fatalf("receive after %v: %v", out, err)
		}
		w := word(msg)
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			w += ":" + m.Message
		case *pgproto3.CommandComplete:
			w += ":" + string(m.CommandTag)
		}
		if w == "" {
			continue
		}
		if w == "Z" {
			n--
		}
		out = append(out, w)
	}
	return strings.Join(out, " ")
}

// exchangeStep is one request of a test that sends the same frames to
// PostgreSQL and to pgferry: what PostgreSQL answers (said), up to syncs
// ReadyForQuerys.
type exchangeStep struct {
	what  string
	syncs int
	want  string
	msgs  []pgproto3.FrontendMessage
}

// answersAlike sends each step to direct, a client of PostgreSQL, and to
// ferry, a client of pgferry, and fails unless PostgreSQL answers as the
// step says and pgferry as PostgreSQL.
func answersAlike(t *testing.T, direct, ferry *rawClient, steps []exchangeStep) {
	t.Helper()
	for _, s := range steps {
		direct.send(s.msgs...)
		want := direct.said(s.syncs)
		if want != s.want {
			t.Fatalf("%s: PostgreSQL answered %q, the test expects %q", s.what, want, s.want)
		}
		ferry.send(s.msgs...)
		if got := ferry.said(s.syncs); got != want {
			t.Fatalf("%s: got %q through pgferry, %q from PostgreSQL", s.what, got, want)
		}
	}
}

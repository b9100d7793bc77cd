package router_test

// COPY FROM STDIN through the extended protocol, as libpq runs it for
// PQexecParams: the Sync it sends after the Execute reaches the server in
// copy-in mode, which ignores it (protocol.sgml, "COPY Operations": "the
// backend will ignore Flush and Sync messages received during copy-in
// mode"), and PQputCopyEnd sends a second Sync after the CopyDone or
// CopyFail, the one ReadyForQuery answers.

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// copyInExtended runs sql, a COPY ... FROM STDIN, on c as libpq's
// PQexecParams and PQputCopyEnd do: Parse, Bind, Describe, Execute, Sync;
// then, once the CopyInResponse came (at once when pipelined), end (the
// rows, the CopyDone or CopyFail) and a Sync. It returns the transcript of
// the server's answers up to the ReadyForQuery that ends it all.
func (c *rawClient) copyInExtended(sql string, pipelined bool, end ...pgproto3.FrontendMessage) string {
	c.t.Helper()
	start := []pgproto3.FrontendMessage{parse("", sql), bind(""), &pgproto3.Describe{ObjectType: 'P'}, execMsg(), syncMsg()}
	end = append(end, syncMsg())
	if pipelined {
		c.send(append(start, end...)...)
		return c.until(1)
	}
	c.send(start...)
	got := c.transcript(func(w string) bool { return w != "G" && w != "Z" })
	if !strings.HasSuffix(got, "G") {
		return got
	}
	c.send(end...)
	return got + " " + c.until(1)
}

func copyRows(rows ...string) []pgproto3.FrontendMessage {
	var msgs []pgproto3.FrontendMessage
	for _, r := range rows {
		msgs = append(msgs, &pgproto3.CopyData{Data: []byte(r + "\n")})
	}
	return msgs
}

func TestCopyFromStdinByTheExtendedProtocolGivesItsServerBackAsPostgreSQLAnswersIt(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, db := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 1)
	f := ferrytest.Start(t, cfg)
	setup := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := setup.Exec(ctx, "create table copy_sink (x int)"); err != nil {
		t.Fatal(err)
	}
	setup.Close(ctx)
	direct := newRawClient(t, cluster.DSN(db, ferrytest.User, ferrytest.Password))

	tests := []struct {
		name      string
		pipelined bool
		end       []pgproto3.FrontendMessage
		want      string
	}{
		{"rows and CopyDone", false, append(copyRows("1", "2"), &pgproto3.CopyDone{}), "1 2 n G C Z"},
		{"rows and CopyDone sent before the CopyInResponse", true, append(copyRows("1", "2"), &pgproto3.CopyDone{}), "1 2 n G C Z"},
		{"a row the COPY refuses", false, append(copyRows("1", "x"), &pgproto3.CopyDone{}), "1 2 n G E:22P02 Z"},
		{"CopyFail", false, append(copyRows("1"), &pgproto3.CopyFail{Message: "the client gave up"}), "1 2 n G E:57014 Z"},
		{"CopyFail sent before the CopyInResponse", true, []pgproto3.FrontendMessage{&pgproto3.CopyFail{Message: "no"}}, "1 2 n G E:57014 Z"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			direct.t = t
			if got := direct.copyInExtended("copy copy_sink from stdin", tc.pipelined, tc.end...); got != tc.want {
				t.Fatalf("PostgreSQL itself answered %q, want %q", got, tc.want)
			}
			c := newRawClient(t, f.AppDSN())
			if got := c.copyInExtended("copy copy_sink from stdin", tc.pipelined, tc.end...); got != tc.want {
				t.Fatalf("through pgferry: got %q, PostgreSQL answers %q", got, tc.want)
			}
			// The COPY's transaction is over: its server goes back to the
			// pool, whose only connection another client now gets.
			ferrytest.Eventually(t, 10*time.Second, "the COPY's server back in the pool", func() (bool, error) {
				return f.Pool(t, "app").ClientsActive == 0, nil
			})
			other := ferrytest.Connect(t, ctx, f.AppDSN())
			octx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			var n int
			if err := other.QueryRow(octx, "select 1").Scan(&n); err != nil {
				t.Fatalf("another client behind the COPY's client: %v", err)
			}
			c.send(&pgproto3.Query{String: "select 1"})
			if got := c.until(1); got != "T D:1 C Z" {
				t.Fatalf("the COPY's client goes on: %q", got)
			}
		})
	}
}

// A Sync a client sends among the rows of an extended-protocol COPY is
// read by the COPY, which ignores it, unless the COPY failed before it
// got there: then the server answers it, after the error, and the Sync
// after the CopyDone too. pgferry cannot see which, so the server of such
// a COPY that failed is not given to another client: its second
// ReadyForQuery, if it comes, would reach that client instead.
func TestAFailedExtendedCopyWithASyncAmongItsRowsLeavesNoReadyForQueryToTheNextClient(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, db := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 1)
	f := ferrytest.Start(t, cfg)
	setup := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := setup.Exec(ctx, "create table copy_sink (x int)"); err != nil {
		t.Fatal(err)
	}
	setup.Close(ctx)
	run := func(c *rawClient) string {
		c.send(parse("", "copy copy_sink from stdin"), bind(""), execMsg(), &pgproto3.Flush{})
		got := c.next(3)
		c.send(&pgproto3.CopyData{Data: []byte("not a number\n")}, syncMsg(),
			&pgproto3.CopyData{Data: []byte("1\n")}, &pgproto3.CopyDone{}, syncMsg())
		return got + " " + c.until(1)
	}
	direct := newRawClient(t, cluster.DSN(db, ferrytest.User, ferrytest.Password))
	want := run(direct)
	if want != "1 2 G E:22P02 Z" || direct.until(1) != "Z" {
		t.Fatalf("PostgreSQL itself answered %q and not a second ReadyForQuery", want)
	}
	c := newRawClient(t, f.AppDSN())
	if got := run(c); got != want {
		t.Fatalf("through pgferry: got %q, PostgreSQL answers %q", got, want)
	}
	ferrytest.Eventually(t, 10*time.Second, "the COPY's client unlinked", func() (bool, error) {
		return f.Pool(t, "app").ClientsActive == 0, nil
	})
	other := newRawClient(t, f.AppDSN())
	for i := range 3 {
		other.send(&pgproto3.Query{String: "select 42"})
		if got := other.until(1); got != "T D:42 C Z" {
			t.Fatalf("the next client's query %d got %q", i, got)
		}
	}
}

// A COPY by the extended protocol that completed read every Sync the
// client sent during it: an error later in the same loan (here its
// transaction) leaves nothing unanswered, and the server goes back to the
// pool as after any failed transaction. Before, any error in a loan that
// had such a COPY was taken for the COPY's own failure (ring.doubt), and
// the server was closed: the next transaction logged in anew.
func TestAnErrorAfterACompletedExtendedCopyKeepsItsServer(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 1)
	f := ferrytest.Start(t, cfg)
	setup := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := setup.Exec(ctx, "create table copy_then_error (x int)"); err != nil {
		t.Fatal(err)
	}
	setup.Close(ctx)

	c := newRawClient(t, f.AppDSN())
	pid := func(transcript string) string {
		t.Helper()
		for _, w := range strings.Fields(transcript) {
			if strings.HasPrefix(w, "D:") {
				return w
			}
		}
		t.Fatalf("no backend pid in %q", transcript)
		return ""
	}
	c.send(&pgproto3.Query{String: "begin; select pg_backend_pid()"})
	before := pid(c.until(1))
	if got := c.copyInExtended("copy copy_then_error from stdin", false, append(copyRows("1", "2"), &pgproto3.CopyDone{})...); got != "1 2 n G C Z" {
		t.Fatalf("the COPY: %q", got)
	}
	c.send(&pgproto3.Query{String: "select 1/0"})
	if got := c.until(1); got != "E:22012 Z" {
		t.Fatalf("the failing statement: %q", got)
	}
	c.send(&pgproto3.Query{String: "rollback"})
	if got := c.until(1); got != "C Z" {
		t.Fatalf("the rollback: %q", got)
	}
	c.send(&pgproto3.Query{String: "select pg_backend_pid()"})
	if after := pid(c.until(1)); after != before {
		t.Fatalf("the next transaction ran on backend %s, the COPY's was %s: the server was closed", after, before)
	}
}

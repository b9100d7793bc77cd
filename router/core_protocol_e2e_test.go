package router_test

// End-to-end tests of wire-protocol corners through pgferry: messages
// larger than the relay buffers, failed transaction blocks, notices, empty
// and multi-statement queries, Terminate inside a transaction, CopyFail and
// parameters from the startup packet.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

func TestMessagesLargerThanTheRelayBuffersStreamThroughBothWays(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	tests := []struct {
		name string
		mode pgx.QueryExecMode
	}{
		{"simple protocol", pgx.QueryExecModeSimpleProtocol},
		{"extended protocol", pgx.QueryExecModeExec},
	}
	// 2 MiB of varied bytes: far over the 8 KiB read buffer and the 64 KiB
	// write buffer, in one Bind (or Query) and one DataRow.
	payload := make([]byte, 2<<20)
	for i := range payload {
		payload[i] = byte(i*7 + i>>11)
	}
	sum := sha256.Sum256(payload)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn := ferrytest.Connect(t, ctx, f.AppDSN())
			var echoed []byte
			var n int
			if err := conn.QueryRow(ctx, "select $1::bytea, length($1::bytea)", tc.mode, payload).Scan(&echoed, &n); err != nil {
				t.Fatal(err)
			}
			if n != len(payload) || sha256.Sum256(echoed) != sum {
				t.Fatalf("server saw %d bytes, client got %d back (checksum match: %v)", n, len(echoed), sha256.Sum256(echoed) == sum)
			}
			// A large result made by the server, then an ordinary query.
			var s string
			if err := conn.QueryRow(ctx, "select repeat('ab', 1500000)", tc.mode).Scan(&s); err != nil || len(s) != 3000000 {
				t.Fatalf("large result: %d bytes, %v", len(s), err)
			}
			if err := conn.QueryRow(ctx, "select 1", tc.mode).Scan(&n); err != nil || n != 1 {
				t.Fatalf("after large messages: %d %v", n, err)
			}
		})
	}
}

func TestAFailedTransactionBlockKeepsItsServerUntilRollback(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg := ferrytest.Config(t, cluster)
	setPoolSize(cfg, "app", 1)
	f := ferrytest.Start(t, cfg)
	tests := []struct {
		name  string
		begin func(ctx context.Context, c *pgx.Conn) error
	}{
		{"simple protocol, one query string", func(ctx context.Context, c *pgx.Conn) error {
			_, err := c.Exec(ctx, "begin; select 1/0")
			return err
		}},
		{"extended protocol", func(ctx context.Context, c *pgx.Conn) error {
			if _, err := c.Exec(ctx, "begin"); err != nil {
				return err
			}
			_, err := c.Exec(ctx, "select 1/$1::int", 0)
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := ferrytest.Connect(t, ctx, f.AppDSN())
			b := ferrytest.Connect(t, ctx, f.AppDSN())
			expectPgError(t, tc.begin(ctx, a), "22012")
			if st := a.PgConn().TxStatus(); st != 'E' {
				t.Fatalf("client transaction status %q, want E", st)
			}
			// b needs the only server, which a's failed block still holds.
			bDone := make(chan error, 1)
			go func() {
				var n int
				err := b.QueryRow(ctx, "select 2").Scan(&n)
				bDone <- err
			}()
			_, err := a.Exec(ctx, "select 3")
			expectPgError(t, err, "25P02")
			if _, err := a.Exec(ctx, "rollback"); err != nil {
				t.Fatal(err)
			}
			if err := <-bDone; err != nil {
				t.Fatalf("the other client, served after the rollback: %v", err)
			}
			var n int
			if err := a.QueryRow(ctx, "select 4").Scan(&n); err != nil || n != 4 {
				t.Fatalf("after rollback: %d %v", n, err)
			}
		})
	}
}

func TestNoticesEmptyQueriesAndMultiStatementErrorsReachTheClientInOrder(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	cc, err := pgx.ParseConfig(f.AppDSN())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var notices []string
	cc.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		mu.Lock()
		notices = append(notices, n.Message)
		mu.Unlock()
	}
	conn := ferrytest.ConnectConfig(t, ctx, cc)

	if _, err := conn.Exec(ctx, "do $$ begin raise notice 'first'; raise notice 'second'; end $$"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got := strings.Join(notices, ",")
	mu.Unlock()
	if got != "first,second" {
		t.Fatalf("notices %q, want first,second", got)
	}

	for _, q := range []string{"", ";", " -- nothing\n"} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("empty query %q: %v", q, err)
		}
	}

	results, err := conn.PgConn().Exec(ctx, "select 1; select 1/0; select 3").ReadAll()
	expectPgError(t, err, "22012")
	// "select 1/0" fails while planning, before a RowDescription: only the
	// first statement has a result.
	if len(results) != 1 || len(results[0].Rows) != 1 || string(results[0].Rows[0][0]) != "1" {
		t.Fatalf("got %d results before the error, want the first statement's row", len(results))
	}
	if st := conn.PgConn().TxStatus(); st != 'I' {
		t.Fatalf("transaction status after the failed implicit transaction: %q, want I", st)
	}
	var n int
	if err := conn.QueryRow(ctx, "select 5").Scan(&n); err != nil || n != 5 {
		t.Fatalf("after the error: %d %v", n, err)
	}
}

func TestTerminateInsideATransactionRollsItBack(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, db := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 1)
	f := ferrytest.Start(t, cfg)
	other := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := other.Exec(ctx, "create table terminated (x int)"); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, f.AppDSN())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "begin"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "insert into terminated values ($1)", 1); err != nil {
		t.Fatal(err)
	}
	// pgx sends Terminate; pgferry must not forward it to a shared server
	// nor hand the server on with the transaction open.
	if err := conn.Close(ctx); err != nil {
		t.Fatal(err)
	}
	ferrytest.Eventually(t, 15*time.Second, "no transaction left open on the server", func() (bool, error) {
		n, err := busyBackends(ctx, db)
		return n == 0, err
	})
	var n int
	if err := other.QueryRow(ctx, "select count(*) from terminated").Scan(&n); err != nil || n != 0 {
		t.Fatalf("rows after the client left mid-transaction: %d %v", n, err)
	}
}

func TestCopyFailFromTheClientEndsCopyAndTheSessionGoesOn(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	f := ferrytest.Start(t, cfg)
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := conn.Exec(ctx, "create table copy_fail (x int)"); err != nil {
		t.Fatal(err)
	}
	errSource := errors.New("source broke")
	rows := 0
	src := pgx.CopyFromFunc(func() ([]any, error) {
		if rows++; rows > 20000 {
			return nil, errSource
		}
		return []any{rows}, nil
	})
	_, err := conn.CopyFrom(ctx, pgx.Identifier{"copy_fail"}, []string{"x"}, src)
	if !errors.Is(err, errSource) {
		// pgx reports the source's error; the server's 57014 for the
		// CopyFail is acceptable too.
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "57014" {
			t.Fatalf("CopyFrom with a failing source: %v", err)
		}
	}
	var n int
	if err := conn.QueryRow(ctx, "select count(*) from copy_fail").Scan(&n); err != nil || n != 0 {
		t.Fatalf("after CopyFail: %d rows, %v", n, err)
	}
	// COPY TO through pgconn, for the other direction.
	var out bytes.Buffer
	tag, err := conn.PgConn().CopyTo(ctx, &out, "copy (select g from generate_series(1, 50000) g) to stdout")
	if err != nil || tag.RowsAffected() != 50000 {
		t.Fatalf("COPY TO: %v %v", tag, err)
	}
	if lines := strings.Count(out.String(), "\n"); lines != 50000 || !strings.HasSuffix(out.String(), "\n50000\n") {
		t.Fatalf("COPY TO gave %d lines", lines)
	}
}

func TestStartupPacketParametersFollowTheClient(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 2)
	f := ferrytest.Start(t, cfg)
	setup := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := setup.Exec(ctx, "create schema opt_schema"); err != nil {
		t.Fatal(err)
	}

	cc, err := pgx.ParseConfig(f.AppDSN() + " application_name=startup-params")
	if err != nil {
		t.Fatal(err)
	}
	cc.RuntimeParams["options"] = "-c search_path=opt_schema -c statement_timeout=12345"
	cc.RuntimeParams["TimeZone"] = "Asia/Tokyo"
	conn := ferrytest.ConnectConfig(t, ctx, cc)
	plain := ferrytest.Connect(t, ctx, f.AppDSN())
	const q = "select current_setting('search_path') || '|' || current_setting('statement_timeout') || '|' || current_setting('TimeZone') || '|' || current_setting('application_name')"
	var def string
	if err := plain.QueryRow(ctx, q).Scan(&def); err != nil {
		t.Fatal(err)
	}
	want := "opt_schema|12345ms|Asia/Tokyo|startup-params"
	for i := range 10 {
		// Alternate who holds a server so each client meets both.
		var got, gotPlain string
		holder, other := plain, conn
		if i%2 == 1 {
			holder, other = conn, plain
		}
		tx, err := holder.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := other.QueryRow(ctx, q).Scan(pick(other == conn, &got, &gotPlain)); err != nil {
			t.Fatal(err)
		}
		if err := tx.QueryRow(ctx, q).Scan(pick(holder == conn, &got, &gotPlain)); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if got != want || gotPlain != def {
			t.Fatalf("round %d: client with startup parameters sees %q, want %q; plain client sees %q, want %q", i, got, want, gotPlain, def)
		}
	}
}

func pick(first bool, a, b *string) *string {
	if first {
		return a
	}
	return b
}

func TestAMessageOverMaxPacketSizeEndsTheSessionWithAProtocolViolation(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg := ferrytest.Config(t, cluster)
	cfg.MaxPacketSize = 64 << 10
	f := ferrytest.Start(t, cfg)
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	var n int
	if err := conn.QueryRow(ctx, "select length($1::text)", strings.Repeat("x", 60<<10)).Scan(&n); err != nil || n != 60<<10 {
		t.Fatalf("message under the limit: %d %v", n, err)
	}
	_, err := conn.Exec(ctx, "select length($1::text)", strings.Repeat("x", 100<<10))
	pe := expectPgError(t, err, "08P01")
	if pe.Severity != "FATAL" || !strings.Contains(pe.Message, "max_packet_size") {
		t.Fatalf("got %s %q, want FATAL mentioning max_packet_size", pe.Severity, pe.Message)
	}
	ferrytest.Eventually(t, 5*time.Second, "the client to be disconnected", func() (bool, error) {
		return conn.IsClosed(), nil
	})
	// Other clients are unaffected.
	other := ferrytest.Connect(t, ctx, f.AppDSN())
	if err := other.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

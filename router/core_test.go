package router_test

// End-to-end tests of the core proxy (issue "Core"): real clients (pgx,
// psql, pgbench) through an in-process pgferry to the package's PostgreSQL
// 15 cluster. This file holds the helpers the core_*_e2e_test.go files
// share, and the login, startup-packet, TLS and connection-limit tests.
//
// Most tests call t.Parallel and use a database of their own
// (coreDatabase), so they cannot see each other's tables, locks or
// sessions. The test that restarts the cluster does not run in parallel
// (see core_restart_e2e_test.go).

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/internal/pgtest"
)

// coreTimeout bounds every core test; the tests finish far sooner on a
// healthy build, the bound only turns a hang into a failure.
const coreTimeout = 90 * time.Second

// coreContext returns a context that ends after coreTimeout or when the test
// ends.
func coreContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), coreTimeout)
	t.Cleanup(cancel)
	return ctx
}

// coreDatabase creates a database owned by the app role for this test only
// and adds a [databases] entry of the same name to cfg (a copy of the "app"
// entry pointing at it). Clients connect to the returned name.
func coreDatabase(t *testing.T, cfg *configs.Config) string {
	t.Helper()
	name := cluster.CreateDatabase(t, pgtest.AppUser)
	db := cfg.Databases["app"]
	db.DBName = name
	cfg.Databases[name] = db
	return name
}

// corePoolSize sets the pool size of database entry name. Loading fills
// PoolSize from default_pool_size, so the entry itself must change.
func corePoolSize(cfg *configs.Config, name string, size int) {
	db := cfg.Databases[name]
	db.PoolSize = size
	cfg.Databases[name] = db
}

// coreConnect connects with pgx and closes the connection at the end of the
// test.
func coreConnect(t *testing.T, ctx context.Context, dsn string) *pgx.Conn {
	t.Helper()
	cc, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return coreConnectConfig(t, ctx, cc)
}

func coreConnectConfig(t *testing.T, ctx context.Context, cc *pgx.ConnConfig) *pgx.Conn {
	t.Helper()
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		t.Fatalf("connect through pgferry: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = conn.Close(ctx)
	})
	return conn
}

// coreEventually polls cond every 20ms until it returns true, failing the
// test if that does not happen within timeout. The last error from cond is
// reported.
func coreEventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		ok, err := cond()
		if ok && err == nil {
			return
		}
		if err != nil {
			lastErr = err
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s (last error: %v)", timeout, what, lastErr)
		}
		<-tick.C
	}
}

// coreQueryInt runs sql as the superuser directly on the cluster, bounded by
// a short timeout so that polling loops stay responsive.
func coreQueryInt(ctx context.Context, sql string, args ...any) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return cluster.QueryInt(ctx, sql, args...)
}

// corePgError asserts that err carries a PostgreSQL error with SQLSTATE code
// and returns it.
func corePgError(t *testing.T, err error, code string) *pgconn.PgError {
	t.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		t.Fatalf("got error %v (%T), want a PostgreSQL error with SQLSTATE %s", err, err, code)
	}
	if pe.Code != code {
		t.Fatalf("got SQLSTATE %s (%s %q), want %s", pe.Code, pe.Severity, pe.Message, code)
	}
	return pe
}

// coreRun runs a PostgreSQL client program (psql, pgbench) against pgferry
// and returns its standard output. libpq settings come only from the
// arguments and the PG* variables set here, never from the environment of
// the test run.
func coreRun(t *testing.T, ctx context.Context, f *ferrytest.Ferry, prog string, args ...string) string {
	t.Helper()
	cmd := osexec.CommandContext(ctx, pgtest.Binary(prog), args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env,
		"PGHOST=127.0.0.1",
		"PGPORT="+strconv.Itoa(f.Addr.Port),
		"PGUSER="+ferrytest.User,
		"PGPASSWORD="+ferrytest.Password,
		"PGSSLMODE=disable",
		"PGCONNECT_TIMEOUT=10",
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", prog, strings.Join(args, " "), err, lastLines(stdout.String(), 20), stderr.String())
	}
	return stdout.String()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// rawReply is what pgferry sent on a raw connection before closing it (or
// before the read deadline).
type rawReply struct {
	msgs   []pgproto3.BackendMessage
	closed bool // the server closed the connection
	err    error
}

// coreRawExchange dials pgferry, writes payload and reads every message
// until pgferry closes the connection or 10s pass.
func coreRawExchange(t *testing.T, f *ferrytest.Ferry, payload []byte) rawReply {
	t.Helper()
	conn, err := net.Dial("tcp", f.Addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(payload); err != nil {
		t.Fatal(err)
	}
	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(conn)
	r := rawReply{closed: err == nil || errors.Is(err, syscall.ECONNRESET), err: err}
	fe := pgproto3.NewFrontend(bytes.NewReader(data), io.Discard)
	for {
		m, err := fe.Receive()
		if err != nil {
			break
		}
		// Receive reuses its message values; keep copies of errors only.
		if e, ok := m.(*pgproto3.ErrorResponse); ok {
			c := *e
			m = &c
		}
		r.msgs = append(r.msgs, m)
	}
	return r
}

func TestPgxQueryExecModesRoundTripValuesThroughPgferry(t *testing.T) {
	t.Parallel()
	ctx := coreContext(t)
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	tests := []struct {
		name string
		mode pgx.QueryExecMode
	}{
		{"simple protocol", pgx.QueryExecModeSimpleProtocol},
		{"exec", pgx.QueryExecModeExec},
		{"cache statement", pgx.QueryExecModeCacheStatement},
		{"cache describe", pgx.QueryExecModeCacheDescribe},
		{"describe exec", pgx.QueryExecModeDescribeExec},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cc, err := pgx.ParseConfig(f.AppDSN())
			if err != nil {
				t.Fatal(err)
			}
			cc.DefaultQueryExecMode = tc.mode
			conn := coreConnectConfig(t, ctx, cc)
			// Several rounds, so cached statements are reused on whatever
			// server connection each transaction gets.
			for i := range 20 {
				var sum int
				var text string
				var null *string
				var blob []byte
				err := conn.QueryRow(ctx, "select $1::int + $2::int, $3::text || '✓', null::text, decode($4, 'hex')",
					i, 40, "pgferry", "00ff10").Scan(&sum, &text, &null, &blob)
				if err != nil {
					t.Fatalf("round %d: %v", i, err)
				}
				if sum != i+40 || text != "pgferry✓" || null != nil || !bytes.Equal(blob, []byte{0, 0xff, 0x10}) {
					t.Fatalf("round %d: got %d %q %v %x", i, sum, text, null, blob)
				}
			}
			rows, err := conn.Query(ctx, "select g from generate_series(1, $1::int) g", 3000)
			if err != nil {
				t.Fatal(err)
			}
			got, err := pgx.CollectRows(rows, pgx.RowTo[int32])
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 3000 || got[0] != 1 || got[2999] != 3000 {
				t.Fatalf("generate_series: got %d rows", len(got))
			}
			// An error leaves the session usable.
			_, err = conn.Exec(ctx, "select 1/$1::int", 0)
			corePgError(t, err, "22012")
			var n int
			if err := conn.QueryRow(ctx, "select $1::int", 7).Scan(&n); err != nil || n != 7 {
				t.Fatalf("after an error: %d %v", n, err)
			}
		})
	}
}

func TestPgxBatchAndPipelineWithSeveralSyncsReturnEveryResultInOrder(t *testing.T) {
	t.Parallel()
	ctx := coreContext(t)
	cfg := ferrytest.Config(t, cluster)
	db := coreDatabase(t, cfg)
	corePoolSize(cfg, db, 2)
	f := ferrytest.Start(t, cfg)
	setup := coreConnect(t, ctx, f.DSN(db, ferrytest.User, ferrytest.Password))
	if _, err := setup.Exec(ctx, "create table batch_items (id int primary key, name text)"); err != nil {
		t.Fatal(err)
	}

	modes := []struct {
		name string
		mode pgx.QueryExecMode
	}{
		{"simple protocol", pgx.QueryExecModeSimpleProtocol},
		{"exec", pgx.QueryExecModeExec},
		{"cache statement", pgx.QueryExecModeCacheStatement},
		{"cache describe", pgx.QueryExecModeCacheDescribe},
	}
	for i, tc := range modes {
		t.Run("batch "+tc.name, func(t *testing.T) {
			cc, err := pgx.ParseConfig(f.DSN(db, ferrytest.User, ferrytest.Password))
			if err != nil {
				t.Fatal(err)
			}
			cc.DefaultQueryExecMode = tc.mode
			conn := coreConnectConfig(t, ctx, cc)
			base := (i + 1) * 100
			for round := range 3 {
				b := &pgx.Batch{}
				b.Queue("insert into batch_items values ($1, $2)", base+round*10, "a")
				b.Queue("insert into batch_items values ($1, $2)", base+round*10+1, "b")
				b.Queue("select count(*) from batch_items where id between $1 and $2", base+round*10, base+round*10+9)
				b.Queue("select name from batch_items where id = $1", base+round*10+1)
				br := conn.SendBatch(ctx, b)
				for q := range 2 {
					if _, err := br.Exec(); err != nil {
						t.Fatalf("round %d insert %d: %v", round, q, err)
					}
				}
				var n int
				if err := br.QueryRow().Scan(&n); err != nil || n != 2 {
					t.Fatalf("round %d count: %d %v", round, n, err)
				}
				var name string
				if err := br.QueryRow().Scan(&name); err != nil || name != "b" {
					t.Fatalf("round %d name: %q %v", round, name, err)
				}
				if err := br.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}

	t.Run("pipeline with an error in the middle segment", func(t *testing.T) {
		conn := coreConnect(t, ctx, f.DSN(db, ferrytest.User, ferrytest.Password))
		p := conn.PgConn().StartPipeline(ctx)
		p.SendQueryParams("select $1::int", [][]byte{[]byte("1")}, nil, nil, nil)
		if err := p.Sync(); err != nil {
			t.Fatal(err)
		}
		p.SendPrepare("core_pipeline_stmt", "select $1::int * 2", nil)
		p.SendQueryParams("select 1/0", nil, nil, nil, nil)
		p.SendQueryParams("select 'skipped'", nil, nil, nil, nil)
		if err := p.Sync(); err != nil {
			t.Fatal(err)
		}
		p.SendQueryPrepared("core_pipeline_stmt", [][]byte{[]byte("21")}, nil, nil)
		p.SendQueryParams("select 'third'", nil, nil, nil, nil)
		if err := p.Sync(); err != nil {
			t.Fatal(err)
		}

		var got []string
		for {
			res, err := p.GetResults()
			if err != nil {
				var pe *pgconn.PgError
				if errors.As(err, &pe) {
					got = append(got, "error "+pe.Code)
					continue
				}
				t.Fatalf("after %v: %v", got, err)
			}
			if res == nil {
				break
			}
			switch r := res.(type) {
			case *pgconn.ResultReader:
				rr := r.Read()
				if rr.Err != nil {
					var pe *pgconn.PgError
					if errors.As(rr.Err, &pe) {
						got = append(got, "error "+pe.Code)
						continue
					}
					t.Fatalf("after %v: %v", got, rr.Err)
				}
				for _, row := range rr.Rows {
					got = append(got, string(row[0]))
				}
			case *pgconn.StatementDescription:
				got = append(got, fmt.Sprintf("prepared with %d parameter(s)", len(r.ParamOIDs)))
			case *pgconn.PipelineSync:
				got = append(got, "sync")
			}
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		// The failing segment's prepare ran before the error; the query after
		// the error is skipped up to the Sync; the next segment works.
		want := []string{"1", "sync", "prepared with 1 parameter(s)", "error 22012", "sync", "42", "third", "sync"}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("pipeline results:\n got %q\nwant %q", got, want)
		}
		var n int
		if err := conn.QueryRow(ctx, "select 5").Scan(&n); err != nil || n != 5 {
			t.Fatalf("after the pipeline: %d %v", n, err)
		}
	})
}

func TestCopyFromTenThousandRowsArrivesComplete(t *testing.T) {
	t.Parallel()
	ctx := coreContext(t)
	cfg := ferrytest.Config(t, cluster)
	db := coreDatabase(t, cfg)
	f := ferrytest.Start(t, cfg)
	conn := coreConnect(t, ctx, f.DSN(db, ferrytest.User, ferrytest.Password))
	if _, err := conn.Exec(ctx, "create table copy_in (id int, label text, payload bytea)"); err != nil {
		t.Fatal(err)
	}
	const n = 10000
	rows := make([][]any, n)
	for i := range rows {
		rows[i] = []any{i, fmt.Sprintf("row %d ✓", i), bytes.Repeat([]byte{byte(i)}, i%300)}
	}
	copied, err := conn.CopyFrom(ctx, pgx.Identifier{"copy_in"}, []string{"id", "label", "payload"}, pgx.CopyFromRows(rows))
	if err != nil {
		t.Fatal(err)
	}
	if copied != n {
		t.Fatalf("CopyFrom reported %d rows, want %d", copied, n)
	}
	var count, sumID, sumLen int64
	if err := conn.QueryRow(ctx, "select count(*), sum(id), sum(length(payload)) from copy_in").Scan(&count, &sumID, &sumLen); err != nil {
		t.Fatal(err)
	}
	var wantLen int64
	for i := range n {
		wantLen += int64(i % 300)
	}
	if count != n || sumID != n*(n-1)/2 || sumLen != wantLen {
		t.Fatalf("got count %d, sum(id) %d, payload bytes %d; want %d, %d, %d", count, sumID, sumLen, n, n*(n-1)/2, wantLen)
	}
	// A failing COPY (duplicate key) is reported and leaves the session usable.
	if _, err := conn.Exec(ctx, "alter table copy_in add primary key (id)"); err != nil {
		t.Fatal(err)
	}
	_, err = conn.CopyFrom(ctx, pgx.Identifier{"copy_in"}, []string{"id", "label", "payload"}, pgx.CopyFromRows(rows[:10]))
	corePgError(t, err, "23505")
	if err := conn.QueryRow(ctx, "select count(*) from copy_in").Scan(&count); err != nil || count != n {
		t.Fatalf("after the failed COPY: %d %v", count, err)
	}
}

func TestLoginFailuresAreReportedWithTheirSQLSTATE(t *testing.T) {
	t.Parallel()
	ctx := coreContext(t)
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	tests := []struct {
		name     string
		dsn      string
		code     string
		message  string
		severity string
	}{
		{"wrong password", f.DSN("app", ferrytest.User, "not-the-password"), "28P01", `password authentication failed for user "app"`, "FATAL"},
		{"unknown user reads like a wrong password", f.DSN("app", "nobody", "whatever"), "28P01", `password authentication failed for user "nobody"`, "FATAL"},
		{"unknown database", f.DSN("nope", ferrytest.User, ferrytest.Password), "3D000", "no such database: nope", "FATAL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := pgx.Connect(ctx, tc.dsn)
			if err == nil {
				conn.Close(ctx)
				t.Fatal("connected, want an error")
			}
			pe := corePgError(t, err, tc.code)
			if pe.Message != tc.message || pe.Severity != tc.severity {
				t.Fatalf("got %s %q, want %s %q", pe.Severity, pe.Message, tc.severity, tc.message)
			}
		})
	}
	// pgferry still serves good clients.
	conn := coreConnect(t, ctx, f.AppDSN())
	if err := conn.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

// startupPacket builds a startup-phase packet: int32 length, int32 code,
// then the given body.
func startupPacket(code uint32, body []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(8+len(body)))
	b = binary.BigEndian.AppendUint32(b, code)
	return append(b, body...)
}

func TestMalformedStartupPacketsGetAProtocolViolationAndAreClosed(t *testing.T) {
	t.Parallel()
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))

	// Random bytes from a fixed seed, so a failure reproduces. The first
	// four are a length outside PostgreSQL's 8..10000 startup packet range.
	rng := mrand.New(mrand.NewPCG(1, 2))
	garbage := make([]byte, 256)
	for i := range garbage {
		garbage[i] = byte(rng.Uint32())
	}
	if n := int32(binary.BigEndian.Uint32(garbage)); n >= 8 && n <= 10000 {
		t.Fatalf("seed gives a plausible length %d; pick another seed", n)
	}
	oversized := binary.BigEndian.AppendUint32(nil, 1<<20)
	oversized = binary.BigEndian.AppendUint32(oversized, 3<<16)
	v30 := uint32(3 << 16)

	tests := []struct {
		name     string
		payload  []byte
		code     string
		severity string
	}{
		{"random bytes", garbage, "08P01", "FATAL"},
		{"oversized length", oversized, "08P01", "FATAL"},
		{"length below the minimum", binary.BigEndian.AppendUint32(nil, 4), "08P01", "FATAL"},
		{"parameters without terminator", startupPacket(v30, []byte("user\x00app\x00database")), "08P01", "FATAL"},
		{"protocol 2.0", startupPacket(2<<16, []byte("user\x00app\x00database\x00app\x00\x00")), "0A000", "FATAL"},
		{"protocol 4.0", startupPacket(4<<16, []byte("user\x00app\x00\x00")), "0A000", "FATAL"},
		{"no user", startupPacket(v30, []byte("database\x00app\x00\x00")), "28000", "FATAL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := coreRawExchange(t, f, tc.payload)
			if !r.closed {
				t.Fatalf("pgferry did not close the connection: %v", r.err)
			}
			if len(r.msgs) != 1 {
				t.Fatalf("got %d messages %#v, want exactly one ErrorResponse", len(r.msgs), r.msgs)
			}
			e, ok := r.msgs[0].(*pgproto3.ErrorResponse)
			if !ok {
				t.Fatalf("got %T, want ErrorResponse", r.msgs[0])
			}
			if e.Code != tc.code || e.Severity != tc.severity {
				t.Fatalf("got %s %s %q, want %s %s", e.Severity, e.Code, e.Message, tc.severity, tc.code)
			}
		})
	}
	// None of that disturbed pgferry.
	conn := coreConnect(t, coreContext(t), f.AppDSN())
	if err := conn.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestProtocol32StartupWithProtocolOptionsIsNegotiatedDownTo30(t *testing.T) {
	t.Parallel()
	ctx := coreContext(t)
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))

	t.Run("raw startup", func(t *testing.T) {
		conn, err := net.Dial("tcp", f.Addr.String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		fe := pgproto3.NewFrontend(conn, conn)
		fe.Send(&pgproto3.StartupMessage{
			ProtocolVersion: pgproto3.ProtocolVersion32,
			Parameters:      map[string]string{"user": ferrytest.User, "database": "app", "_pq_.x": "1"},
		})
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		m, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		npv, ok := m.(*pgproto3.NegotiateProtocolVersion)
		if !ok {
			t.Fatalf("first message is %T, want NegotiateProtocolVersion", m)
		}
		if npv.NewestMinorProtocol != 0 || len(npv.UnrecognizedOptions) != 1 || npv.UnrecognizedOptions[0] != "_pq_.x" {
			t.Fatalf("got NegotiateProtocolVersion minor %d options %q, want 0 [_pq_.x]", npv.NewestMinorProtocol, npv.UnrecognizedOptions)
		}
		// Then authentication proceeds as for 3.0.
		m, err = fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := m.(*pgproto3.AuthenticationSASL); !ok {
			t.Fatalf("after NegotiateProtocolVersion got %T, want AuthenticationSASL", m)
		}
	})

	t.Run("pgx asking for 3.2", func(t *testing.T) {
		cc, err := pgx.ParseConfig(f.AppDSN() + " max_protocol_version=3.2")
		if err != nil {
			t.Fatal(err)
		}
		cc.RuntimeParams["_pq_.x"] = "1"
		conn := coreConnectConfig(t, ctx, cc)
		var n int
		if err := conn.QueryRow(ctx, "select $1::int", 32).Scan(&n); err != nil || n != 32 {
			t.Fatalf("query over negotiated protocol: %d %v", n, err)
		}
	})
}

func TestClientTLSRequiredRefusesPlainClientsAndServesVerifiedOnes(t *testing.T) {
	t.Parallel()
	ctx := coreContext(t)
	cfg := ferrytest.Config(t, cluster)
	cfg.ClientTLSSSLMode = "require"
	cfg.ClientTLSCertFile = cluster.CertFile
	cfg.ClientTLSKeyFile = cluster.KeyFile
	f := ferrytest.Start(t, cfg)
	base := f.AppDSN() + " host=localhost sslrootcert=" + cluster.CAFile

	t.Run("sslmode=disable is refused", func(t *testing.T) {
		conn, err := pgx.Connect(ctx, f.AppDSN())
		if err == nil {
			conn.Close(ctx)
			t.Fatal("a client without TLS connected")
		}
		pe := corePgError(t, err, "28000")
		if pe.Severity != "FATAL" || pe.Message != "SSL required" {
			t.Fatalf("got %s %q, want FATAL %q", pe.Severity, pe.Message, "SSL required")
		}
	})
	tests := []struct {
		name string
		dsn  string
	}{
		{"sslmode=require", base + " sslmode=require"},
		{"sslmode=verify-full", base + " sslmode=verify-full"},
		{"sslmode=verify-full with SCRAM channel binding", base + " sslmode=verify-full channel_binding=require"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn := coreConnect(t, ctx, tc.dsn)
			if _, ok := conn.PgConn().Conn().(*tls.Conn); !ok {
				t.Fatalf("connection is %T, want *tls.Conn", conn.PgConn().Conn())
			}
			var n int
			if err := conn.QueryRow(ctx, "select $1::int", 7).Scan(&n); err != nil || n != 7 {
				t.Fatalf("query over TLS: %d %v", n, err)
			}
		})
	}
}

// writeOtherCA writes a self-signed CA certificate unrelated to the
// cluster's and returns its path.
func writeOtherCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pgferry test other CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestServerTLSModesReachPostgreSQLAsConfigured(t *testing.T) {
	t.Parallel()
	ctx := coreContext(t)
	otherCA := writeOtherCA(t)
	tests := []struct {
		name     string
		host     string
		sslMode  string
		rootCert string
		wantSSL  bool
		wantFail bool
	}{
		{"disable", cluster.Host, "disable", "", false, false},
		{"require", cluster.Host, "require", "", true, false},
		{"verify-ca", cluster.Host, "verify-ca", cluster.CAFile, true, false},
		{"verify-full by host name", "localhost", "verify-full", cluster.CAFile, true, false},
		{"verify-full against another CA fails", "localhost", "verify-full", otherCA, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ferrytest.Config(t, cluster)
			db := cfg.Databases["app"]
			db.Host, db.SSLMode, db.SSLRootCert = tc.host, tc.sslMode, tc.rootCert
			cfg.Databases["app"] = db
			f := ferrytest.Start(t, cfg)
			conn, err := pgx.Connect(ctx, f.AppDSN())
			if tc.wantFail {
				if err == nil {
					defer conn.Close(ctx)
					_, err = conn.Exec(ctx, "select 1")
				}
				if err == nil {
					t.Fatal("pgferry logged in to a server whose certificate its CA did not sign")
				}
				var pe *pgconn.PgError
				if !errors.As(err, &pe) || !strings.HasPrefix(pe.Code, "08") {
					t.Fatalf("got %v, want a connection error (SQLSTATE class 08)", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			var ssl bool
			if err := conn.QueryRow(ctx, "select ssl from pg_stat_ssl where pid = pg_backend_pid()").Scan(&ssl); err != nil {
				t.Fatal(err)
			}
			if ssl != tc.wantSSL {
				t.Fatalf("server connection ssl = %v, want %v", ssl, tc.wantSSL)
			}
		})
	}
}

func TestMaxClientConnRefusesTheClientOverTheLimit(t *testing.T) {
	t.Parallel()
	ctx := coreContext(t)
	cfg := ferrytest.Config(t, cluster)
	cfg.MaxClientConn = 2
	f := ferrytest.Start(t, cfg)
	first := coreConnect(t, ctx, f.AppDSN())
	second, err := pgx.Connect(ctx, f.AppDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close(ctx)

	_, err = pgx.Connect(ctx, f.AppDSN())
	pe := corePgError(t, err, "53300")
	if pe.Severity != "FATAL" || pe.Message != "no more connections allowed (max_client_conn)" {
		t.Fatalf("got %s %q", pe.Severity, pe.Message)
	}
	for _, c := range []*pgx.Conn{first, second} {
		if err := c.Ping(ctx); err != nil {
			t.Fatalf("a client under the limit broke: %v", err)
		}
	}
	// Once a client leaves, its slot is free again.
	if err := second.Close(ctx); err != nil {
		t.Fatal(err)
	}
	coreEventually(t, 10*time.Second, "a free client slot", func() (bool, error) {
		c, err := pgx.Connect(ctx, f.AppDSN())
		if err != nil {
			return false, err
		}
		return true, c.Close(ctx)
	})
}

func TestNegotiationRequestsAreAnsweredAndUnknownCancelKeysDropped(t *testing.T) {
	t.Parallel()
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	startup := func() []byte {
		b, err := (&pgproto3.StartupMessage{
			ProtocolVersion: pgproto3.ProtocolVersionNumber,
			Parameters:      map[string]string{"user": ferrytest.User, "database": "app"},
		}).Encode(nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name   string
		first  []byte // a negotiation packet
		answer byte   // the single byte pgferry answers it with
	}{
		{"GSSENCRequest is declined", startupPacket(1234<<16|5680, nil), 'N'},
		{"SSLRequest is declined when client TLS is off", startupPacket(1234<<16|5679, nil), 'N'},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", f.Addr.String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := conn.Write(tc.first); err != nil {
				t.Fatal(err)
			}
			var b [1]byte
			if _, err := io.ReadFull(conn, b[:]); err != nil || b[0] != tc.answer {
				t.Fatalf("answer %q %v, want %q", b[0], err, tc.answer)
			}
			// The client goes on in plain text on the same connection.
			if _, err := conn.Write(startup()); err != nil {
				t.Fatal(err)
			}
			m, err := pgproto3.NewFrontend(conn, conn).Receive()
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := m.(*pgproto3.AuthenticationSASL); !ok {
				t.Fatalf("after the negotiation got %T, want AuthenticationSASL", m)
			}
		})
	}
	t.Run("CancelRequest with an unknown key closes without a reply", func(t *testing.T) {
		p := binary.BigEndian.AppendUint32(nil, 16)
		p = binary.BigEndian.AppendUint32(p, 1234<<16|5678)
		p = binary.BigEndian.AppendUint32(p, 12345)
		p = binary.BigEndian.AppendUint32(p, 67890)
		r := coreRawExchange(t, f, p)
		if !r.closed || len(r.msgs) != 0 {
			t.Fatalf("closed %v (%v), messages %#v; want a silent close", r.closed, r.err, r.msgs)
		}
	})
}

func TestPlaintextSentRightAfterSSLRequestNeverReachesAuthentication(t *testing.T) {
	t.Parallel()
	cfg := ferrytest.Config(t, cluster)
	cfg.ClientTLSSSLMode = "require"
	cfg.ClientTLSCertFile = cluster.CertFile
	cfg.ClientTLSKeyFile = cluster.KeyFile
	f := ferrytest.Start(t, cfg)
	// SSLRequest and a plaintext StartupMessage in one write: the startup
	// must not be taken as if it had come over TLS (CVE-2021-23214 is the
	// same mistake in PostgreSQL).
	payload := startupPacket(1234<<16|5679, nil)
	payload = append(payload, startupPacket(3<<16, []byte("user\x00app\x00database\x00app\x00\x00"))...)
	conn, err := net.Dial("tcp", f.Addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(payload); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	data, err := io.ReadAll(conn)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("pgferry did not close the connection: %v", err)
	}
	// Either an ErrorResponse straight away, or 'S' followed by nothing but
	// TLS records (a handshake failure alert): never a plaintext
	// authentication request.
	switch {
	case len(data) > 0 && data[0] == 'E':
	case len(data) > 0 && data[0] == 'S':
		if len(data) > 1 && data[1] == 'R' {
			t.Fatalf("pgferry answered the plaintext startup with an authentication request: %q", data)
		}
	default:
		t.Fatalf("unexpected reply %q", data)
	}
}

func TestServerLoginFailuresReachTheClientWithoutSecrets(t *testing.T) {
	t.Parallel()
	ctx := coreContext(t)
	closedPort, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	const secret = "wrong-server-secret-4711"
	tests := []struct {
		name   string
		change func(*configs.Database)
		code   string // SQLSTATE of the first client's error
		text   string // in its message
	}{
		{"wrong server password", func(d *configs.Database) { d.Password = configs.Secret(secret) },
			"28P01", `password authentication failed for user "app"`},
		{"missing server database", func(d *configs.Database) { d.DBName = "no_such_db_here" },
			"3D000", `database "no_such_db_here" does not exist`},
		{"server not listening", func(d *configs.Database) { d.Port = closedPort; d.Password = configs.Secret(secret) },
			"08006", "could not connect"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ferrytest.Config(t, cluster)
			db := cfg.Databases["app"]
			tc.change(&db)
			cfg.Databases["app"] = db
			f := ferrytest.Start(t, cfg)
			_, err := pgx.Connect(ctx, f.AppDSN())
			pe := corePgError(t, err, tc.code)
			if pe.Severity != "FATAL" || !strings.Contains(pe.Message, tc.text) {
				t.Fatalf("got %s %q, want FATAL containing %q", pe.Severity, pe.Message, tc.text)
			}
			// Clients right after it fail fast with the cached error
			// (server_login_retry) or the same one, never with the secret.
			for range 3 {
				_, err := pgx.Connect(ctx, f.AppDSN())
				var pe *pgconn.PgError
				if !errors.As(err, &pe) {
					t.Fatalf("got %v, want a PostgreSQL error", err)
				}
				if pe.Code != tc.code && pe.Code != "08006" {
					t.Fatalf("got %s %q", pe.Code, pe.Message)
				}
			}
			if strings.Contains(f.Logs(), secret) {
				t.Fatal("pgferry logged the server password")
			}
			for _, s := range []string{pe.Message, pe.Detail, pe.Hint} {
				if strings.Contains(s, secret) {
					t.Fatalf("the client was told the server password: %q", s)
				}
			}
		})
	}
}

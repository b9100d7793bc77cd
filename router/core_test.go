package router_test

// End-to-end tests of the core proxy (issue "Core"): real clients (pgx,
// psql, pgbench) through an in-process pgferry to the package's PostgreSQL
// 15 cluster. This file holds the login, startup-packet, TLS and
// connection-limit tests; the core_*_e2e_test.go files hold the rest. Their
// helpers are in helpers_test.go.
//
// Most tests call t.Parallel and use a database of their own
// (configWithOwnDatabase), so they cannot see each other's tables, locks or
// sessions. The test that restarts the cluster does not run in parallel
// (see core_restart_e2e_test.go).

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"strings"
	"sync"
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

// connectInMode is ferrytest.Connect with pgx's default query exec mode
// set to mode.
func connectInMode(t *testing.T, ctx context.Context, dsn string, mode pgx.QueryExecMode) *pgx.Conn {
	t.Helper()
	cc, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cc.DefaultQueryExecMode = mode
	return ferrytest.ConnectConfig(t, ctx, cc)
}

func TestPgxQueryExecModesRoundTripValuesThroughPgferry(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
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
			conn := connectInMode(t, ctx, f.AppDSN(), tc.mode)
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
			expectPgError(t, err, "22012")
			var n int
			if err := conn.QueryRow(ctx, "select $1::int", 7).Scan(&n); err != nil || n != 7 {
				t.Fatalf("after an error: %d %v", n, err)
			}
		})
	}
}

func TestPgxBatchAndPipelineWithSeveralSyncsReturnEveryResultInOrder(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 2)
	f := ferrytest.Start(t, cfg)
	setup := ferrytest.Connect(t, ctx, f.AppDSN())
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
			conn := connectInMode(t, ctx, f.AppDSN(), tc.mode)
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
		conn := ferrytest.Connect(t, ctx, f.AppDSN())
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
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	f := ferrytest.Start(t, cfg)
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
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
	expectPgError(t, err, "23505")
	if err := conn.QueryRow(ctx, "select count(*) from copy_in").Scan(&count); err != nil || count != n {
		t.Fatalf("after the failed COPY: %d %v", count, err)
	}
}

func TestLoginFailuresAreReportedWithTheirSQLSTATE(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
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
			pe := expectPgError(t, err, tc.code)
			if pe.Message != tc.message || pe.Severity != tc.severity {
				t.Fatalf("got %s %q, want %s %q", pe.Severity, pe.Message, tc.severity, tc.message)
			}
		})
	}
	// pgferry still serves good clients.
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	if err := conn.Ping(ctx); err != nil {
		t.Fatal(err)
	}
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
			c := dialFerry(t, f)
			sendRaw(t, c, tc.payload)
			frames := readUntilClosed(t, c)
			if len(frames) != 1 || frames[0].typ != 'E' {
				t.Fatalf("got %s, want exactly one ErrorResponse", describe(frames))
			}
			if e := errorFields(frames[0].body); e['C'] != tc.code || e['S'] != tc.severity {
				t.Fatalf("got %s %s %q, want %s %s", e['S'], e['C'], e['M'], tc.severity, tc.code)
			}
		})
	}
	// None of that disturbed pgferry.
	conn := ferrytest.Connect(t, testContext(t), f.AppDSN())
	if err := conn.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestProtocol32StartupWithProtocolOptionsIsNegotiatedDownTo30(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))

	t.Run("raw startup", func(t *testing.T) {
		conn := dialFerry(t, f)
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
		conn := ferrytest.ConnectConfig(t, ctx, cc)
		var n int
		if err := conn.QueryRow(ctx, "select $1::int", 32).Scan(&n); err != nil || n != 32 {
			t.Fatalf("query over negotiated protocol: %d %v", n, err)
		}
	})
}

func TestClientTLSRequiredRefusesPlainClientsAndServesVerifiedOnes(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg := ferrytest.Config(t, cluster)
	offerClientTLS(cfg, "require")
	f := ferrytest.Start(t, cfg)
	base := f.AppDSN() + " host=localhost sslrootcert=" + cluster.CAFile

	t.Run("sslmode=disable is refused", func(t *testing.T) {
		conn, err := pgx.Connect(ctx, f.AppDSN())
		if err == nil {
			conn.Close(ctx)
			t.Fatal("a client without TLS connected")
		}
		pe := expectPgError(t, err, "28000")
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
			conn := ferrytest.Connect(t, ctx, tc.dsn)
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
	certFile, _ := writeSelfSigned(t, &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pgferry test other CA"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	})
	return certFile
}

func TestServerTLSModesReachPostgreSQLAsConfigured(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
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
	ctx := testContext(t)
	cfg := ferrytest.Config(t, cluster)
	cfg.MaxClientConn = 2
	f := ferrytest.Start(t, cfg)
	first := ferrytest.Connect(t, ctx, f.AppDSN())
	second := ferrytest.Connect(t, ctx, f.AppDSN())

	_, err := pgx.Connect(ctx, f.AppDSN())
	pe := expectPgError(t, err, "53300")
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
	ferrytest.Eventually(t, 10*time.Second, "a free client slot", func() (bool, error) {
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
	tests := []struct {
		name   string
		first  []byte // a negotiation packet
		answer byte   // the single byte pgferry answers it with
	}{
		{"GSSENCRequest is declined", startupPacket(gssEncRequestCode, nil), 'N'},
		{"SSLRequest is declined when client TLS is off", startupPacket(sslRequestCode, nil), 'N'},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn := dialFerry(t, f)
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			sendRaw(t, conn, tc.first)
			var b [1]byte
			if _, err := io.ReadFull(conn, b[:]); err != nil || b[0] != tc.answer {
				t.Fatalf("answer %q %v, want %q", b[0], err, tc.answer)
			}
			// The client goes on in plain text on the same connection.
			sendRaw(t, conn, startupMessage(t, ferrytest.User, "app"))
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
		key := binary.BigEndian.AppendUint32(nil, 12345)
		key = binary.BigEndian.AppendUint32(key, 67890)
		c := dialFerry(t, f)
		sendRaw(t, c, startupPacket(cancelRequestCode, key))
		if frames := readUntilClosed(t, c); len(frames) != 0 {
			t.Fatalf("got %s; want a silent close", describe(frames))
		}
	})
}

func TestPlaintextSentRightAfterSSLRequestNeverReachesAuthentication(t *testing.T) {
	t.Parallel()
	cfg := ferrytest.Config(t, cluster)
	offerClientTLS(cfg, "require")
	f := ferrytest.Start(t, cfg)
	// SSLRequest and a plaintext StartupMessage in one write: the startup
	// must not be taken as if it had come over TLS (CVE-2021-23214 is the
	// same mistake in PostgreSQL).
	payload := startupPacket(sslRequestCode, nil)
	payload = append(payload, startupPacket(3<<16, []byte("user\x00app\x00database\x00app\x00\x00"))...)
	conn := dialFerry(t, f)
	sendRaw(t, conn, payload)
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
	ctx := testContext(t)
	closedPort, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	const secret = "wrong-server-secret-4711"
	silentPort := silentServer(t)
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
		// The dial times out in the TLS handshake: a connection failure,
		// not the client's own query_wait_timeout (08P01), although both
		// are a deadline passing.
		{"server that never answers SSLRequest", func(d *configs.Database) {
			d.Port, d.SSLMode, d.Password = silentPort, "require", configs.Secret(secret)
		}, "08006", "could not connect"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ferrytest.Config(t, cluster)
			cfg.OutageHoldTimeout = 0 // fail at once rather than wait for a server that never listens
			cfg.ServerConnectTimeout = configs.Duration(time.Second)
			db := cfg.Databases["app"]
			tc.change(&db)
			cfg.Databases["app"] = db
			f := ferrytest.Start(t, cfg)
			_, err := pgx.Connect(ctx, f.AppDSN())
			pe := expectPgError(t, err, tc.code)
			t.Logf("the client was told %s %s %q", pe.Severity, pe.Code, pe.Message)
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

// silentServer listens on a loopback port whose connections are accepted,
// read and never answered, until the test ends; it returns the port.
func silentServer(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	closed := false
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		closed = true
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if closed {
				c.Close()
			}
			conns = append(conns, c)
			mu.Unlock()
			go io.Copy(io.Discard, c)
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

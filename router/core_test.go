package router_test

// End-to-end tests of the core proxy (issue "Core"): real clients (pgx,
// psql, pgbench) through an in-process pgferry to the package's PostgreSQL
// 15 cluster. This file holds the login, startup-packet and
// connection-limit tests; the core_*_e2e_test.go files hold the rest (pgx
// in core_pgx_e2e_test.go, TLS in core_tls_e2e_test.go). Their helpers are
// in helpers_test.go.
//
// Most tests call t.Parallel and use a database of their own
// (configWithOwnDatabase), so they cannot see each other's tables, locks or
// sessions. The test that restarts the cluster does not run in parallel
// (see core_restart_e2e_test.go).

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
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

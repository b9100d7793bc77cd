package router

import (
	"crypto/fips140"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/tls13"
)

// skipWithoutTakeover skips a test of sessions on internal/tls13 where TLS
// 1.3 connections stay with crypto/tls.
func skipWithoutTakeover(t *testing.T) {
	t.Helper()
	if !tls13.Enabled || fips140.Enabled() {
		t.Skip("no TLS 1.3 takeover: built with pgferry_notls13, or FIPS 140 mode")
	}
}

// tls13ServerConfig is the client-facing TLS configuration of a Server (see
// Server.apply), with a throwaway certificate.
func tls13ServerConfig(t *testing.T) *tls.Config {
	t.Helper()
	return tls13.ServerConfig(&tls.Config{Certificates: []tls.Certificate{selfSigned(t)}, MinVersion: tls.VersionTLS12, SessionTicketsDisabled: true})
}

// tls13Client is a crypto/tls client that speaks TLS 1.3 only.
func tls13Client(c net.Conn) *tls.Conn {
	return tls.Client(c, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
}

// tlsKeysWiped reports whether both directions of c hold no key, secret
// or sequence number any more. They are internal/tls13's unexported
// fields, read through reflection rather than exported for tests: a
// renamed field fails the test here instead of passing it.
func tlsKeysWiped(t *testing.T, c *tls13.Conn) bool {
	t.Helper()
	v := reflect.ValueOf(c).Elem()
	for _, name := range []string{"in", "out"} {
		f := v.FieldByName(name)
		if !f.IsValid() {
			t.Fatalf("tls13.Conn has no field %q any more: update tlsKeysWiped", name)
		}
		if !f.IsZero() {
			return false
		}
	}
	return true
}

func TestAFailedTLS13LoginWipesTheSessionsKeys(t *testing.T) {
	skipWithoutTakeover(t)
	cfg := unreachableConfig(t, `auth_failure_delay = "0s"`)
	srv, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv.ctls.Store(&clientTLS{cfg: tls13ServerConfig(t)})

	tests := []struct {
		name, password, database, code string
	}{
		{"wrong password", "not-the-secret", "app", "28P01"},
		{"unknown database", "app-secret", "nosuch", "3D000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw, cc := tcpPair(t)
			ss := srv.newSession(raw)
			srv.wg.Add(1) // as the accept loop does; a failed admit releases it
			admitted := make(chan *session, 1)
			go func() { admitted <- srv.admitSession(ss) }()

			cc.SetDeadline(time.Now().Add(10 * time.Second))
			var sslRequest [8]byte
			binary.BigEndian.PutUint32(sslRequest[0:], 8)
			binary.BigEndian.PutUint32(sslRequest[4:], 80877103)
			if _, err := cc.Write(sslRequest[:]); err != nil {
				t.Fatal(err)
			}
			var answer [1]byte
			if _, err := io.ReadFull(cc, answer[:]); err != nil || answer[0] != 'S' {
				t.Fatalf("SSLRequest answered %q, %v", answer, err)
			}
			client := tls13Client(cc)
			fe := pgproto3.NewFrontend(client, client)
			fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
				Parameters: map[string]string{"user": "app", "database": tc.database}})
			if err := fe.Flush(); err != nil {
				t.Fatal(err)
			}
			if msg, err := fe.Receive(); err != nil {
				t.Fatal(err)
			} else if _, ok := msg.(*pgproto3.AuthenticationCleartextPassword); !ok {
				t.Fatalf("pgferry asked for %T; want a cleartext password", msg)
			}
			fe.Send(&pgproto3.PasswordMessage{Password: tc.password})
			if err := fe.Flush(); err != nil {
				t.Fatal(err)
			}
			// The FATAL comes over TLS 1.3 (after an AuthenticationOk for
			// a good password), then the connection ends.
			var fatal *pgproto3.ErrorResponse
			for fatal == nil {
				msg, err := fe.Receive()
				if err != nil {
					t.Fatalf("before the FATAL: %v", err)
				}
				switch m := msg.(type) {
				case *pgproto3.ErrorResponse:
					fatal = m
				case *pgproto3.AuthenticationOk:
				default:
					t.Fatalf("pgferry sent %T; want the login's FATAL", msg)
				}
			}
			if fatal.Severity != "FATAL" || fatal.Code != tc.code {
				t.Fatalf("login failed with %s %s %q; want FATAL %s", fatal.Severity, fatal.Code, fatal.Message, tc.code)
			}
			if v := client.ConnectionState().Version; v != tls.VersionTLS13 {
				t.Fatalf("the client spoke %s; want TLS 1.3", tls.VersionName(v))
			}
			if msg, err := fe.Receive(); err == nil {
				t.Fatalf("after the FATAL pgferry sent %T; want the end of the connection", msg)
			}

			if got := <-admitted; got != nil {
				t.Fatal("a failed login was admitted")
			}
			conn, ok := ss.conn.(*tls13.Conn)
			if !ok {
				t.Fatalf("the session's conn is %T; want the *tls13.Conn that took the client's TLS over", ss.conn)
			}
			if !tlsKeysWiped(t, conn) {
				t.Fatal("the keys of a session whose login failed were not wiped")
			}
		})
	}
	if n := srv.clients.Load(); n != 0 {
		t.Fatalf("%d clients counted after every login failed; want 0", n)
	}
}

package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
)

// fakeServerConfig configures serveOneLogin, a minimal PostgreSQL server
// that performs only startup and authentication, using this package.
type fakeServerConfig struct {
	store  *Store
	method string           // "scram" or "md5"
	tls    *tls.Certificate // non-nil: accept SSLRequest and offer -PLUS
}

// startFakeServer listens on 127.0.0.1 and serves one login in a goroutine.
// The returned channel yields the server-side authentication result (nil on
// success) and is closed when the goroutine has exited.
func startFakeServer(t *testing.T, cfg fakeServerConfig) (addr string, result <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan error, 1)
	go func() {
		defer close(ch)
		defer ln.Close()
		// Bound the wait in case the client fails before connecting.
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(30 * time.Second))
		conn, err := ln.Accept()
		if err != nil {
			ch <- err
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		ch <- serveOneLogin(conn, cfg)
	}()
	t.Cleanup(func() {
		ln.Close()
		for range ch {
		}
	})
	return ln.Addr().String(), ch
}

func serveOneLogin(conn net.Conn, cfg fakeServerConfig) error {
	be := pgproto3.NewBackend(conn, conn)
	var cb []byte
	var startup *pgproto3.StartupMessage
	for startup == nil {
		msg, err := be.ReceiveStartupMessage()
		if err != nil {
			return fmt.Errorf("receive startup: %w", err)
		}
		switch m := msg.(type) {
		case *pgproto3.SSLRequest:
			if cfg.tls == nil {
				if _, err := conn.Write([]byte("N")); err != nil {
					return err
				}
				continue
			}
			if _, err := conn.Write([]byte("S")); err != nil {
				return err
			}
			tlsConn := tls.Server(conn, &tls.Config{Certificates: []tls.Certificate{*cfg.tls}})
			conn = tlsConn
			be = pgproto3.NewBackend(conn, conn)
			cb = ChannelBindingHash(cfg.tls.Leaf)
		case *pgproto3.GSSEncRequest:
			if _, err := conn.Write([]byte("N")); err != nil {
				return err
			}
		case *pgproto3.StartupMessage:
			startup = m
		default:
			return fmt.Errorf("unexpected startup message %T", msg)
		}
	}
	user := startup.Parameters["user"]
	cred, known := cfg.store.Lookup(user)

	authErr := func() error {
		switch cfg.method {
		case "md5":
			var salt [4]byte
			rand.Read(salt[:])
			be.Send(&pgproto3.AuthenticationMD5Password{Salt: salt})
			if err := be.Flush(); err != nil {
				return err
			}
			if err := be.SetAuthType(pgproto3.AuthTypeMD5Password); err != nil {
				return err
			}
			msg, err := be.Receive()
			if err != nil {
				return err
			}
			pw, ok := msg.(*pgproto3.PasswordMessage)
			if !ok {
				return fmt.Errorf("unexpected %T", msg)
			}
			if !known || !VerifyMD5(user, cred, salt, pw.Password) {
				return ErrPasswordMismatch
			}
			return nil
		default:
			var srv *SCRAMServer
			if known {
				var err error
				if srv, err = NewSCRAMServer(user, cred, cb); err != nil {
					return err
				}
			} else {
				srv = NewSCRAMServerForUnknownUser(user, cb)
			}
			be.Send(&pgproto3.AuthenticationSASL{AuthMechanisms: srv.Mechanisms()})
			if err := be.Flush(); err != nil {
				return err
			}
			if err := be.SetAuthType(pgproto3.AuthTypeSASL); err != nil {
				return err
			}
			msg, err := be.Receive()
			if err != nil {
				return err
			}
			first, ok := msg.(*pgproto3.SASLInitialResponse)
			if !ok {
				return fmt.Errorf("unexpected %T", msg)
			}
			sf, err := srv.Start(first.AuthMechanism, first.Data)
			if err != nil {
				return err
			}
			be.Send(&pgproto3.AuthenticationSASLContinue{Data: sf})
			if err := be.Flush(); err != nil {
				return err
			}
			if err := be.SetAuthType(pgproto3.AuthTypeSASLContinue); err != nil {
				return err
			}
			if msg, err = be.Receive(); err != nil {
				return err
			}
			resp, ok := msg.(*pgproto3.SASLResponse)
			if !ok {
				return fmt.Errorf("unexpected %T", msg)
			}
			final, err := srv.Finish(resp.Data)
			if err != nil {
				return err
			}
			be.Send(&pgproto3.AuthenticationSASLFinal{Data: final})
			return nil
		}
	}()
	if authErr != nil {
		code := "28P01"
		var pe *ProtocolError
		if errors.As(authErr, &pe) {
			code = "08P01"
		}
		be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: code,
			Message: fmt.Sprintf("password authentication failed for user %q", user)})
		_ = be.Flush()
		return authErr
	}
	be.Send(&pgproto3.AuthenticationOk{})
	be.Send(&pgproto3.ParameterStatus{Name: "server_version", Value: "15.0"})
	be.Send(&pgproto3.ParameterStatus{Name: "client_encoding", Value: "UTF8"})
	be.Send(&pgproto3.ParameterStatus{Name: "standard_conforming_strings", Value: "on"})
	be.Send(&pgproto3.BackendKeyData{ProcessID: 1, SecretKey: []byte{0, 0, 0, 1}})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	if err := be.Flush(); err != nil {
		return err
	}
	// Wait for the client's Terminate (or EOF) so the client sees a clean close.
	_, _ = be.Receive()
	return nil
}

// selfSignedCert returns an ECDSA P-256 certificate signed with SHA-256.
func selfSignedCert(t *testing.T) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "pgferry test"},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func mustCred(t *testing.T, user, stored string) Credential {
	t.Helper()
	c, err := ParseCredential(user, stored)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPgxLogsInThroughSCRAMServerAndMD5(t *testing.T) {
	store := NewStore(map[string]Credential{
		"plainuser":    mustCred(t, "plainuser", "plain secret"),
		"verifieruser": mustCred(t, "verifieruser", SCRAMVerifier("verifier secret", []byte("saltsaltsaltsalt"), 4096)),
		"md5user":      mustCred(t, "md5user", "md5"+md5Hex("md5 secret", "md5user")),
	})
	cert := selfSignedCert(t)
	tests := []struct {
		name, method, user, password, params string
		tls                                  bool
		wantErr                              error
	}{
		{"scram from plain credential", "scram", "plainuser", "plain secret", "sslmode=disable", false, nil},
		{"scram from verifier", "scram", "verifieruser", "verifier secret", "sslmode=disable", false, nil},
		{"scram wrong password", "scram", "plainuser", "wrong", "sslmode=disable", false, ErrPasswordMismatch},
		{"scram unknown user", "scram", "nobody", "whatever", "sslmode=disable", false, ErrPasswordMismatch},
		{"scram-plus channel binding required", "scram", "plainuser", "plain secret", "sslmode=require&channel_binding=require", true, nil},
		{"scram-plus wrong password", "scram", "verifieruser", "wrong", "sslmode=require&channel_binding=require", true, ErrPasswordMismatch},
		{"scram-plus preferred by default", "scram", "verifieruser", "verifier secret", "sslmode=require", true, nil},
		// "n,," over TLS is allowed (the client does not support binding);
		// only "y,," while -PLUS is offered is a downgrade (see the in-process tests).
		{"scram over tls with binding disabled", "scram", "plainuser", "plain secret", "sslmode=require&channel_binding=disable", true, nil},
		{"scram unknown user over tls", "scram", "nobody", "x", "sslmode=require&channel_binding=require", true, ErrPasswordMismatch},
		{"md5 from md5 hash", "md5", "md5user", "md5 secret", "sslmode=disable", false, nil},
		{"md5 from plain credential", "md5", "plainuser", "plain secret", "sslmode=disable", false, nil},
		{"md5 wrong password", "md5", "md5user", "wrong", "sslmode=disable", false, ErrPasswordMismatch},
		{"md5 unknown user", "md5", "nobody", "x", "sslmode=disable", false, ErrPasswordMismatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := fakeServerConfig{store: store, method: tc.method}
			if tc.tls {
				cfg.tls = cert
			}
			addr, result := startFakeServer(t, cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			u := url.URL{Scheme: "postgres", User: url.UserPassword(tc.user, tc.password), Host: addr, Path: "/db", RawQuery: tc.params}
			conn, err := pgx.Connect(ctx, u.String())
			if err == nil {
				if err := conn.Close(ctx); err != nil {
					t.Errorf("close: %v", err)
				}
			}
			srvErr := <-result
			if tc.wantErr == nil {
				if err != nil || srvErr != nil {
					t.Fatalf("pgx error %v, server error %v; want success", err, srvErr)
				}
				return
			}
			if err == nil {
				t.Fatal("pgx connected, want failure")
			}
			if !errors.Is(srvErr, tc.wantErr) {
				t.Fatalf("server error %v, want %v", srvErr, tc.wantErr)
			}
		})
	}
}

package entra

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgferry/pgferry/internal/pgtest"
)

// fakeJWT returns a token-shaped string of about n bytes; real Entra tokens
// are 1.5-3 KB.
func fakeJWT(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n*3/4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString(b) + ".sig"
}

// TestTokenFromTheSourceLogsInToPostgreSQLAndRotates stands a local
// PostgreSQL in for Azure (entra-id.md 4C): a role whose password is the fake
// token, authenticated with cleartext "password" over TLS as the Azure server
// does, with a UPN-style role name.
func TestTokenFromTheSourceLogsInToPostgreSQLAndRotates(t *testing.T) {
	const principal = "app@contoso.onmicrosoft.com"
	c, err := pgtest.Start(pgtest.Options{
		TLS: true,
		HBA: []string{`hostssl all "` + principal + `" 127.0.0.1/32 password`},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	token1, token2 := fakeJWT(t, 2048), fakeJWT(t, 2048)
	if err := c.CreateRole(ctx, principal, token1); err != nil {
		t.Fatal(err)
	}

	clk := newFakeClock()
	s, iss := newSecretSource(t, clk, 120*time.Second)
	iss.fixed.Store(&token1)

	login := func(password string) error {
		dsn := c.DSN("postgres", principal, password) +
			" sslmode=verify-full sslrootcert=" + c.CAFile
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		var user string
		if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&user); err != nil {
			return err
		}
		if user != principal {
			t.Errorf("current_user = %q, want %q", user, principal)
		}
		return nil
	}

	tok, err := s.Password(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := login(tok); err != nil {
		t.Fatalf("login with the first token: %v", err)
	}

	// Rotate: the server now expects token2 and the endpoint issues it.
	if err := c.Exec(ctx, "ALTER ROLE "+pgx.Identifier{principal}.Sanitize()+" PASSWORD '"+token2+"'"); err != nil {
		t.Fatal(err)
	}
	iss.fixed.Store(&token2)
	s.Start(ctx)
	clk.Advance(81 * time.Second)
	eventually(t, "the refresh", func() bool { return s.Stats().Refreshes == 2 })

	tok, err = s.Password(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tok != token2 {
		t.Fatal("Password did not return the rotated token")
	}
	if err := login(tok); err != nil {
		t.Fatalf("login with the rotated token: %v", err)
	}
	err = login(token1)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
		t.Fatalf("login with the old token: err = %v, want 28P01 invalid_password", err)
	}
}

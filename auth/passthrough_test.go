package auth

import (
	"errors"
	"fmt"
	"testing"
)

// secretFor builds a SCRAM verifier for password as PostgreSQL stores it.
func secretFor(t *testing.T, password string, salt []byte) string {
	t.Helper()
	keys, err := deriveSCRAMKeys(password, salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	sec := keys.secret(salt, 4096)
	return sec.String()
}

// passExchange runs a client against a server, as pgferry's client side and a
// server holding cred would.
func passExchange(t *testing.T, client *SCRAMClient, srv *SCRAMServer) error {
	t.Helper()
	first, err := srv.Start(MechanismSCRAMSHA256, client.ClientFirst())
	if err != nil {
		return err
	}
	final, err := client.ClientFinal(first)
	if err != nil {
		return err
	}
	serverFinal, err := srv.Finish(final)
	if err != nil {
		return err
	}
	return client.VerifyServerFinal(serverFinal)
}

func TestPassThroughKeysFromAClientsLoginLogInToAServerWithTheSameSecret(t *testing.T) {
	stored := secretFor(t, "pw", []byte("0123456789abcdef"))
	cred, err := ParseCredential("u", stored)
	if err != nil {
		t.Fatal(err)
	}
	// The client logs in to pgferry with the password.
	front, err := NewSCRAMServer("u", cred, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := passExchange(t, NewSCRAMClient("pw"), front); err != nil {
		t.Fatal(err)
	}
	keys, ok := front.PassThroughKeys()
	if !ok {
		t.Fatal("no pass-through keys after a successful login")
	}
	if s := fmt.Sprint(keys) + fmt.Sprintf("%#v", keys); s != "[redacted][redacted]" {
		t.Fatalf("keys print as %q", s)
	}
	// pgferry logs in to a server with the same secret, without the password.
	back, err := NewSCRAMServer("u", cred, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := passExchange(t, NewSCRAMClientWithKeys(keys), back); err != nil {
		t.Fatalf("pass-through login: %v", err)
	}
	// A server holding another secret for the role is refused before any
	// proof is sent.
	other, err := ParseCredential("u", secretFor(t, "pw", []byte("fedcba9876543210")))
	if err != nil {
		t.Fatal(err)
	}
	changed, err := NewSCRAMServer("u", other, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := passExchange(t, NewSCRAMClientWithKeys(keys), changed); !errors.Is(err, ErrSCRAMSecretDiffers) {
		t.Fatalf("against another secret: %v, want ErrSCRAMSecretDiffers", err)
	}
}

func TestAFailedLoginYieldsNoPassThroughKeys(t *testing.T) {
	cred, err := ParseCredential("u", secretFor(t, "pw", []byte("0123456789abcdef")))
	if err != nil {
		t.Fatal(err)
	}
	front, err := NewSCRAMServer("u", cred, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := passExchange(t, NewSCRAMClient("wrong"), front); err == nil {
		t.Fatal("a wrong password logged in")
	}
	if _, ok := front.PassThroughKeys(); ok {
		t.Fatal("pass-through keys after a failed login")
	}
}

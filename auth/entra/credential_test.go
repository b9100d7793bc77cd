package entra

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testSecret = "s3cr3t-V4lue~xyz"

func TestManagedIdentityTokenSourceReturnsTheEndpointsToken(t *testing.T) {
	iss := newIssuer(nil, time.Hour)
	newFakeMI(t, iss)

	cred, err := NewCredential(Config{
		Credential: CredentialManagedIdentity,
		ClientID:   uniqueMIClientID(t), // the MI cache is process-wide
	})
	if err != nil {
		t.Fatal(err)
	}
	s := NewTokenSource(cred, Config{Database: "app"})
	defer s.Close()

	for range 3 {
		tok, err := s.Password(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if tokenName(tok) != "token-1" {
			t.Fatalf("Password = %q, want token-1", tokenName(tok))
		}
	}
	if n := iss.requests.Load(); n != 1 {
		t.Errorf("endpoint saw %d requests, want 1", n)
	}
	st := s.Stats()
	if st.Requests != 1 || st.Refreshes != 1 {
		t.Errorf("Stats = %+v, want 1 request and 1 refresh", st)
	}
	if time.Until(st.ExpiresOn) < 59*time.Minute {
		t.Errorf("ExpiresOn = %s, want about an hour from now", st.ExpiresOn)
	}
}

func TestClientSecretCredentialReadsTheSecretFromAFileOrAVariable(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte(testSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		file string
		env  string
	}{
		{name: "file", file: secretFile},
		{name: "env", env: "PGFERRY_TEST_ENTRA_SECRET"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("PGFERRY_TEST_ENTRA_SECRET", testSecret)
			iss := newIssuer(nil, time.Hour)
			srv := newFakeAuthority(t, iss)
			cfg := authorityConfig(srv, tc.env)
			cfg.ClientSecretFile = tc.file

			cred, err := NewCredential(cfg)
			if err != nil {
				t.Fatal(err)
			}
			s := NewTokenSource(cred, cfg)
			defer s.Close()
			tok, err := s.Password(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if tokenName(tok) != "token-1" {
				t.Errorf("Password = %q, want token-1", tokenName(tok))
			}
			form := iss.form()
			if got := form.Get("client_secret"); got != testSecret {
				t.Errorf("client_secret = %q, want the configured secret", got)
			}
			if got := form.Get("grant_type"); got != "client_credentials" {
				t.Errorf("grant_type = %q", got)
			}
			if got := form.Get("scope"); !strings.Contains(got, DefaultScope) {
				t.Errorf("scope = %q, want it to contain %s", got, DefaultScope)
			}
		})
	}
}

func TestWorkloadIdentityCredentialSendsTheFederatedTokenAsAssertion(t *testing.T) {
	const assertion = "federated-service-account-token"
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(assertion), 0o600); err != nil {
		t.Fatal(err)
	}
	iss := newIssuer(nil, time.Hour)
	srv := newFakeAuthority(t, iss)
	cfg := Config{
		Credential:               CredentialWorkloadIdentity,
		TenantID:                 "tenant",
		ClientID:                 "client",
		TokenFile:                tokenFile,
		AuthorityHost:            srv.URL,
		DisableInstanceDiscovery: true,
		Transport:                srv.Client(),
		Scope:                    "https://example.test/.default",
	}
	cred, err := NewCredential(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := NewTokenSource(cred, cfg)
	defer s.Close()
	if _, err := s.Password(context.Background()); err != nil {
		t.Fatal(err)
	}
	form := iss.form()
	if got := form.Get("client_assertion"); got != assertion {
		t.Errorf("client_assertion = %q, want the federated token", got)
	}
	if got := form.Get("scope"); !strings.Contains(got, cfg.Scope) {
		t.Errorf("scope = %q, want it to contain %s", got, cfg.Scope)
	}
}

func TestNewCredentialRejectsBadConfigWithoutEchoingTheSecret(t *testing.T) {
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte(testSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	emptyFile := filepath.Join(dir, "empty")
	if err := os.WriteFile(emptyFile, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PGFERRY_TEST_ENTRA_SECRET", testSecret)
	t.Setenv("PGFERRY_TEST_ENTRA_EMPTY", "")

	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"unknown type", Config{Credential: "password"}, "unknown credential type"},
		{"http authority", Config{Credential: CredentialClientSecret, TenantID: "t", ClientID: "c",
			ClientSecretFile: secretFile, AuthorityHost: "http://login.example"}, "must be an https URL"},
		{"missing tenant", Config{Credential: CredentialClientSecret, ClientID: "c",
			ClientSecretFile: secretFile}, "tenant ID and client ID are required"},
		{"no secret source", Config{Credential: CredentialClientSecret, TenantID: "t", ClientID: "c"},
			"client secret file or client secret variable is required"},
		{"two secret sources", Config{Credential: CredentialClientSecret, TenantID: "t", ClientID: "c",
			ClientSecretFile: secretFile, ClientSecretEnv: "PGFERRY_TEST_ENTRA_SECRET"}, "not both"},
		{"missing secret file", Config{Credential: CredentialClientSecret, TenantID: "t", ClientID: "c",
			ClientSecretFile: filepath.Join(dir, "nope")}, "no such file"},
		{"empty secret file", Config{Credential: CredentialClientSecret, TenantID: "t", ClientID: "c",
			ClientSecretFile: emptyFile}, "is empty"},
		{"empty secret variable", Config{Credential: CredentialClientSecret, TenantID: "t", ClientID: "c",
			ClientSecretEnv: "PGFERRY_TEST_ENTRA_EMPTY"}, "PGFERRY_TEST_ENTRA_EMPTY is unset or empty"},
		{"secret for managed identity", Config{Credential: CredentialManagedIdentity,
			ClientSecretEnv: "PGFERRY_TEST_ENTRA_SECRET"}, "only used by the client_secret credential"},
		{"token file for client secret", Config{Credential: CredentialClientSecret, TenantID: "t", ClientID: "c",
			ClientSecretFile: secretFile, TokenFile: secretFile}, "only used by the workload_identity credential"},
		{"client id for default", Config{ClientID: "c"}, "set AZURE_CLIENT_ID"},
		{"invalid tenant", Config{Credential: CredentialClientSecret, TenantID: "bad tenant!", ClientID: "c",
			ClientSecretEnv: "PGFERRY_TEST_ENTRA_SECRET"}, "tenant"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewCredential(tc.cfg)
			if err == nil {
				t.Fatal("NewCredential succeeded, want an error")
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.wantErr) {
				t.Errorf("error %q does not contain %q", msg, tc.wantErr)
			}
			if strings.Contains(msg, testSecret) {
				t.Errorf("error %q contains the secret", msg)
			}
		})
	}
}

func TestPrintingSourcesConfigsAndErrorsShowsNoSecret(t *testing.T) {
	t.Setenv("PGFERRY_TEST_ENTRA_SECRET", testSecret)
	iss := newIssuer(nil, time.Hour)
	srv := newFakeAuthority(t, iss)
	cfg := authorityConfig(srv, "PGFERRY_TEST_ENTRA_SECRET")
	cred, err := NewCredential(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := NewTokenSource(cred, cfg)
	defer s.Close()
	tok, err := s.Password(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	tokErr := &TokenError{Database: "app", Reason: "x"}

	var out strings.Builder
	for _, v := range []any{s, s.Stats(), cfg, &cfg, cred, tokErr} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
			fmt.Fprintf(&out, verb+"\n", v)
		}
	}
	// A copy of the struct itself (reflect.Value avoids vet's copylocks).
	fmt.Fprintf(&out, "%+v\n%#v\n", derefValue(s), derefValue(s))
	fmt.Fprintf(&out, "%+v\n%#v\n", derefValue(cred), derefValue(cred))

	for _, secret := range []string{tok, tokenName(tok), testSecret} {
		if strings.Contains(out.String(), secret) {
			t.Fatalf("printed output contains a secret %q:\n%s", secret, out.String())
		}
	}
	if !strings.Contains(s.String(), `database="app"`) {
		t.Errorf("String() = %q, want the database", s.String())
	}
}

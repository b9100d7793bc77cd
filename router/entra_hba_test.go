package router_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/entratest"
)

// With auth_type = "hba", auth_hba_file decides who may connect at all:
// client_auth = "entra" replaces the method of the line that admits a
// client, never a reject line. (Not parallel, like the other Entra tests:
// entraClientFerry alters the shared roles.)
func TestAnEntraClientIsRefusedByARejectLineOfTheHBAFileAndAdmittedByAnyOther(t *testing.T) {
	is := entratest.NewIssuer(t)
	hbaFile := filepath.Join(t.TempDir(), "hba.conf")
	if err := os.WriteFile(hbaFile, []byte("hostssl all entra_ro all reject\nhostssl all all all scram-sha-256\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := entraClientFerry(t, is, time.Hour, func(c *configs.Config) {
		c.AuthType = "hba"
		c.AuthHBAFile = hbaFile
	})
	ctx := testContext(t)

	mi := is.Sign(t, is.AppClaims(miAppID, miObject, time.Hour))
	if u, err := currentUser(ctx, tokenDSN(f, "entra_rw", mi, "require")); err != nil || u != "entra_rw" {
		t.Fatalf("entra_rw, admitted by the scram-sha-256 line, with its token: %q, %v", u, err)
	}
	alice := is.Sign(t, is.UserClaims(aliceUPN, aliceOID, time.Hour))
	_, err := currentUser(ctx, tokenDSN(f, "entra_ro", alice, "require"))
	pe := expectPgError(t, err, "28000")
	if !strings.HasPrefix(pe.Message, "auth_hba_file rejects connection") {
		t.Fatalf("entra_ro on a reject line: %q, want the hba refusal", pe.Message)
	}
}

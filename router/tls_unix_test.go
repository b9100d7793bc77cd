package router_test

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// client_tls_sslmode = "require" asks for TLS over the network: a client on
// pgferry's unix socket, which libpq never encrypts (nor does PostgreSQL or
// PgBouncer offer TLS there: "require SSL except on unix socket", client.c),
// is served in the clear, while a plain TCP client is still refused.
func TestRequiredClientTLSLetsUnixSocketClientsInAndRefusesPlainTCPOnes(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg := ferrytest.Config(t, cluster)
	offerClientTLS(cfg, "require")
	cfg.UnixSocketDir = unixSocketDir(t)
	f := ferrytest.Start(t, cfg)

	unixDSN := fmt.Sprintf("host=%s port=%d dbname=app user=%s", cfg.UnixSocketDir, f.Addr.Port, ferrytest.User)
	cmd := exec.CommandContext(ctx, "psql", "-X", "-At", "-c", "select 'over the unix socket'", unixDSN)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+ferrytest.Password, "PGSSLMODE=prefer")
	if out, err := cmd.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "over the unix socket" {
		t.Fatalf("psql on the unix socket: %q, %v", out, err)
	}

	conn, err := pgx.Connect(ctx, f.AppDSN())
	if err == nil {
		conn.Close(ctx)
		t.Fatal("a plain TCP client connected")
	}
	if pe := expectPgError(t, err, "28000"); pe.Message != "SSL required" {
		t.Fatalf("plain TCP client: %q, want SSL required", pe.Message)
	}
}

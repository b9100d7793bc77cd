package router_test

// Clients turned away before login (max_client_conn, allow_cidrs) must be
// able to read why: libpq sends an SSLRequest first with its default
// sslmode=prefer, and an error in place of the answer would be printed as
// "server sent an error response during SSL exchange".

import (
	"fmt"
	"os"
	osexec "os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
)

// runPsql runs psql with sslmode=prefer (libpq's default) against
// database app of f as user app, and returns its combined output. It must
// fail: the tests use it for refused clients.
func runPsql(t *testing.T, f *ferrytest.Ferry) string {
	t.Helper()
	psql, err := osexec.LookPath("psql")
	if err != nil {
		t.Fatalf("psql is required: %v", err)
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	cmd := osexec.Command(psql, "-X", "-w", "-c", "select 1",
		fmt.Sprintf("host=127.0.0.1 port=%d dbname=app user=%s sslmode=prefer connect_timeout=10", f.Addr.Port, ferrytest.User))
	cmd.Env = append(env, "PGPASSWORD="+ferrytest.Password)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("psql connected, want a refusal:\n%s", out)
	}
	return string(out)
}

func TestRefusedClientsReadTheReasonThroughPsqlAndPgx(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		clientTLS bool // pgferry offers TLS (sslmode prefer)
		setup     func(cfg *configs.Config)
		full      bool // one client holds the only slot
		wantCode  string
		wantMsg   string
	}{
		{"max_client_conn without client TLS", false, func(cfg *configs.Config) { cfg.MaxClientConn = 1 }, true,
			"53300", "no more connections allowed (max_client_conn)"},
		{"max_client_conn with client TLS", true, func(cfg *configs.Config) { cfg.MaxClientConn = 1 }, true,
			"53300", "no more connections allowed (max_client_conn)"},
		{"allow_cidrs with client TLS", true, func(cfg *configs.Config) { cfg.AllowCIDRs = []string{"10.0.0.0/8"} }, false,
			"28000", "client address is not in allow_cidrs"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			cfg := ferrytest.Config(t, cluster)
			if tc.clientTLS {
				offerClientTLS(cfg, "prefer")
			}
			tc.setup(cfg)
			f := ferrytest.Start(t, cfg)
			if tc.full {
				ferrytest.Connect(t, ctx, f.AppDSN())
			}

			out := runPsql(t, f)
			if !strings.Contains(out, tc.wantMsg) || strings.Contains(out, "SSL exchange") {
				t.Fatalf("psql printed:\n%s\nwant %q", out, tc.wantMsg)
			}

			dsn := strings.Replace(f.AppDSN(), "sslmode=disable", "sslmode=prefer", 1)
			_, err := pgx.Connect(ctx, dsn)
			pe := expectPgError(t, err, tc.wantCode)
			if pe.Severity != "FATAL" || pe.Message != tc.wantMsg {
				t.Fatalf("pgx got %s %q, want FATAL %q", pe.Severity, pe.Message, tc.wantMsg)
			}
			assertNoPanic(t, f)
		})
	}
}

func TestAdminConsoleIsExemptFromMaxClientConn(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg := ferrytest.Config(t, cluster)
	cfg.MaxClientConn = 1
	f := ferrytest.Start(t, cfg)
	ferrytest.Connect(t, ctx, f.AppDSN())
	admin := ferrytest.Connect(t, ctx, f.DSN("pgbouncer", "admin", "admin-secret"))
	if _, err := admin.Exec(ctx, "show clients", pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatalf("admin console over max_client_conn: %v", err)
	}
}

func TestARefusedClientThatSendsNothingIsToldAndClosedSoon(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg := ferrytest.Config(t, cluster)
	cfg.MaxClientConn = 1
	f := ferrytest.Start(t, cfg)
	ferrytest.Connect(t, ctx, f.AppDSN())

	c := dialFerry(t, f)
	start := time.Now()
	frames := readUntilClosed(t, c)
	// pgferry gives a refused client 2 s; 8 s leaves room for a loaded CI
	// machine while still failing on client_login_timeout (60 s).
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("a silent refused client was held for %s", d)
	}
	errs := errorsIn(frames)
	if len(errs) != 1 || errs[0]['C'] != "53300" {
		t.Fatalf("got %s, want one FATAL 53300", describe(frames))
	}
}

// Package ferrytest starts pgferry in-process for tests: a router.Server on
// a free loopback port in front of a pgtest cluster, with helpers to build
// the configuration, to connect real clients through it, to read its pools
// and to wait for what the test set in motion.
package ferrytest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/pgtest"
	"github.com/pgferry/pgferry/router"
)

// Client credentials every Config made here accepts.
const (
	User     = "app"
	Password = "app-secret"
)

// Config returns a configuration for pgferry in front of cluster: listen on
// 127.0.0.1:0, SCRAM for clients with user app/app-secret, database "app"
// mapped to the cluster's "app" database with the same credentials, and
// short timeouts suitable for tests. Callers adjust it before Start.
func Config(t testing.TB, cluster *pgtest.Cluster) *configs.Config {
	t.Helper()
	toml := fmt.Sprintf(`
listen_addr = "127.0.0.1"
listen_port = 0
auth_type = "scram-sha-256"
pool_mode = "transaction"
default_pool_size = 5
query_wait_timeout = "30s"
server_login_retry = "200ms"
shutdown_timeout = "5s"
admin_users = ["admin"]
stats_users = ["stats"]

[users.app]
password = %[1]q
[users.admin]
password = "admin-secret"
[users.stats]
password = "stats-secret"

[databases.app]
host = %[2]q
port = %[3]d
dbname = "app"
password = %[1]q
`, Password, cluster.Host, cluster.Port)
	cfg, _, err := configs.Parse([]byte(toml), "toml", func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("ferrytest config: %v", err)
	}
	// Tests run with the relay loop on (relay_loop, whose default depends
	// on the CPU count); PGFERRY_TEST_RELAY_LOOP=0 runs a suite with it
	// off, to test the goroutines' relay under every test's traffic.
	cfg.RelayLoop = os.Getenv("PGFERRY_TEST_RELAY_LOOP") != "0"
	return cfg
}

// ChoosesItsRelayMode marks a test that sets the relay mode itself (one
// mode, or each in turn) instead of taking PGFERRY_TEST_RELAY_LOOP's: it
// runs alike in both of CI's passes over the router's tests, so the pass
// with the loop off (PGFERRY_TEST_RELAY_LOOP=0) skips it.
func ChoosesItsRelayMode(t testing.TB) {
	t.Helper()
	if os.Getenv("PGFERRY_TEST_RELAY_LOOP") == "0" {
		t.Skip("sets its relay mode itself: it runs in the pass with the relay loop on")
	}
}

// Ferry is a running in-process pgferry.
type Ferry struct {
	Server *router.Server
	Addr   *net.TCPAddr
	logs   *Buffer
}

// Start runs pgferry with cfg until the test ends (then it is shut down and
// its pools closed). Logs go to an in-memory buffer (see Logs) at debug
// level.
func Start(t testing.TB, cfg *configs.Config, opts ...func(*router.Options)) *Ferry {
	t.Helper()
	logs := &Buffer{}
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	log := zap.New(zapcore.NewCore(enc, zapcore.AddSync(logs), zapcore.DebugLevel))
	o := router.Options{Logger: log}
	for _, f := range opts {
		f(&o)
	}
	srv, err := router.New(cfg, o)
	if err != nil {
		t.Fatalf("ferrytest: new server: %v", err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatalf("ferrytest: listen: %v", err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatalf("ferrytest: serve: %v", err)
	}
	f := &Ferry{Server: srv, Addr: srv.Addr().(*net.TCPAddr), logs: logs}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if t.Failed() {
			l := logs.String()
			if len(l) > 16<<10 {
				l = "...\n" + l[len(l)-16<<10:]
			}
			t.Logf("pgferry's log:\n%s", l)
		}
	})
	return f
}

// DSN returns a libpq keyword/value connection string to database db
// through pgferry as user/password, without TLS.
func (f *Ferry) DSN(db, user, password string) string {
	return fmt.Sprintf("host=%s port=%d dbname=%s user=%s password=%s sslmode=disable", f.Addr.IP, f.Addr.Port, db, user, password)
}

// AppDSN is DSN("app", User, Password).
func (f *Ferry) AppDSN() string { return f.DSN("app", User, Password) }

// Logs returns everything pgferry logged so far.
func (f *Ferry) Logs() string { return f.logs.String() }

// WriteConfig writes a TOML file in t.TempDir and returns its path.
func WriteConfig(t testing.TB, toml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pgferry.toml")
	if err := os.WriteFile(p, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Buffer is a bytes.Buffer that one goroutine (a logger, a process) may
// write to while another reads it.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *Buffer) Sync() error { return nil }

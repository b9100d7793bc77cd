package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/internal/pgtest"
)

// startFerry runs the pgferry binary with config and waits until it accepts
// a client.
func startFerry(t *testing.T, bin, config, dsn string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "-config", config)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := pgx.Connect(ctx, dsn)
		cancel()
		if err == nil {
			c.Close(context.Background())
			return cmd
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgferry did not become ready: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestReplacingPgferryWithSOReusePortLosesNoTransaction(t *testing.T) {
	// Let the kernel hand connections queued on the old process's closing
	// listener to the new one (Linux 5.14+); see deploy/README.md.
	const migrate = "/proc/sys/net/ipv4/tcp_migrate_req"
	old, err := os.ReadFile(migrate)
	if err != nil {
		t.Fatalf("%s: %v (needs Linux 5.14+)", migrate, err)
	}
	if err := os.WriteFile(migrate, []byte("1"), 0o644); err != nil {
		t.Fatalf("enable %s: %v", migrate, err)
	}
	t.Cleanup(func() { os.WriteFile(migrate, old, 0o644) })

	cluster, err := pgtest.Start(pgtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Stop()
	pgbench := pgtest.Binary("pgbench")
	init := exec.Command(pgbench, "-i", "-s", "1", cluster.DSN(pgtest.AppDatabase, pgtest.AppUser, pgtest.AppPassword))
	if out, err := init.CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}

	dir := t.TempDir()
	bin := buildPgferry(t, dir)
	port, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "pgferry.toml")
	os.WriteFile(config, []byte(fmt.Sprintf(`
listen_addr = "127.0.0.1"
listen_port = %d
so_reuseport = true
shutdown_timeout = "10s"
log_level = "info"
default_pool_size = 5
[users.app]
password = %q
[databases.app]
host = %q
port = %d
password = %q
`, port, pgtest.AppPassword, cluster.Host, cluster.Port, pgtest.AppPassword)), 0o600)
	dsn := fmt.Sprintf("host=127.0.0.1 port=%d dbname=app user=app password=%s sslmode=disable", port, pgtest.AppPassword)

	first := startFerry(t, bin, config, dsn)
	bench := exec.Command(pgbench, "-n", "-S", "-C", "-c", "8", "-j", "2", "-T", "6", dsn)
	var out strings.Builder
	bench.Stdout, bench.Stderr = &out, &out
	if err := bench.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // let traffic flow through the first process
	// A client could reach the first process through the shared port, so
	// readiness of the second is its own "pgferry ready" line: it logs it
	// once its listener is bound.
	second, logs := startFerryWatched(t, bin, config, dsn)
	logs.waitFor(t, "pgferry ready", 0)
	if err := first.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := first.Wait(); err != nil {
		t.Errorf("first pgferry did not exit cleanly: %v", err)
	}
	benchErr := bench.Wait()
	second.Process.Signal(syscall.SIGTERM)
	second.Wait()

	report := out.String()
	if benchErr != nil {
		t.Fatalf("pgbench failed across the swap: %v\n%s", benchErr, report)
	}
	m := regexp.MustCompile(`number of transactions actually processed: (\d+)`).FindStringSubmatch(report)
	if m == nil || m[1] == "0" {
		t.Fatalf("no transactions processed:\n%s", report)
	}
	if !strings.Contains(report, "number of failed transactions: 0 (0.000%)") {
		t.Fatalf("failed transactions across the swap:\n%s", report)
	}
	t.Logf("%s transactions across the swap, none failed", m[1])
}

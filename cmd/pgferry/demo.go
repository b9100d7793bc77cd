package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/localpg"
)

// runDemo starts a throwaway PostgreSQL, points pgferry at it and prints a
// psql command that connects through pgferry. Everything is removed on exit.
func runDemo(port int) int {
	fmt.Fprintln(os.Stderr, "pgferry: no -config given: starting a throwaway PostgreSQL for a demo...")
	if err := ensurePostgres(); err != nil {
		fmt.Fprintln(os.Stderr, "pgferry:", err)
		return exitError
	}
	cluster, err := localpg.Start(localpg.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgferry: cannot start PostgreSQL:", err)
		return exitError
	}
	defer cluster.Stop()
	dir, err := os.MkdirTemp("", "pgferry-demo-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgferry:", err)
		return exitError
	}
	defer os.RemoveAll(dir)
	toml := fmt.Sprintf(`# pgferry demo configuration (generated)
listen_addr = "127.0.0.1"
listen_port = %d
auth_type = "scram-sha-256"
pool_mode = "transaction"
default_pool_size = 10
log_format = "console"
admin_users = ["%[2]s"]

[users.%[2]s]
password = "%[3]s"

[databases.%[4]s]
host = "%[5]s"
port = %[6]d
password = "%[3]s"
`, port, localpg.AppUser, localpg.AppPassword, localpg.AppDatabase, cluster.Host, cluster.Port)
	path := filepath.Join(dir, "pgferry.toml")
	if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, "pgferry:", err)
		return exitError
	}
	cfg, _, err := configs.Load(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgferry: demo config:", err)
		return exitError
	}
	log, level, err := newLogger(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgferry:", err)
		return exitError
	}
	fmt.Fprintf(os.Stderr, "\nPostgreSQL %s:%d is up. Connect through pgferry with:\n\n    psql \"host=%s port=%d dbname=%s user=%s password=%s\"\n\nPress Ctrl-C to stop (the throwaway cluster is removed).\n\n",
		cluster.Host, cluster.Port, connectHost(cfg.ListenAddr), cfg.ListenPort, localpg.AppDatabase, localpg.AppUser, localpg.AppPassword)
	return serve(cfg, path, log, level)
}

// connectHost is the host a local client reaches listen_addr at: its first
// address, or loopback for the wildcard ones.
func connectHost(listenAddr string) string {
	first, _, _ := strings.Cut(listenAddr, ",")
	switch first = strings.TrimSpace(first); first {
	case "", "*", "0.0.0.0", "::":
		return "127.0.0.1"
	}
	return first
}

// ensurePostgres installs Debian's PostgreSQL 15 when its programs are
// missing and pgferry runs as root on a machine with apt-get (a fresh
// container or VM), so the demo works there in one command. The package's
// own cluster is stopped again: the demo starts its own.
func ensurePostgres() error {
	if _, err := os.Stat(localpg.Binary("initdb")); err == nil {
		return nil
	}
	apt, err := exec.LookPath("apt-get")
	if err != nil || os.Geteuid() != 0 {
		return fmt.Errorf("PostgreSQL 15 is not installed (%s missing); install Debian's postgresql-15 package or run bash .ci/run once", localpg.Binary("initdb"))
	}
	fmt.Fprintln(os.Stderr, "pgferry: PostgreSQL 15 is not installed; installing Debian's postgresql-15 with apt-get...")
	for _, args := range [][]string{{"update", "-q"}, {"install", "-y", "-q", "--no-install-recommends", "postgresql-15"}} {
		cmd := exec.Command(apt, args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("apt-get %s: %w", args[0], err)
		}
	}
	// Debian starts a "main" cluster on port 5432; the demo does not use it.
	exec.Command("pg_ctlcluster", "15", "main", "stop").Run()
	return nil
}

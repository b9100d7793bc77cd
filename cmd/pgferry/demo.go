package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/pgtest"
)

// runDemo starts a throwaway PostgreSQL, points pgferry at it and prints a
// psql command that connects through pgferry. Everything is removed on exit.
func runDemo(port int) int {
	fmt.Fprintln(os.Stderr, "pgferry: no -config given: starting a throwaway PostgreSQL for a demo...")
	cluster, err := pgtest.Start(pgtest.Options{})
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
`, port, pgtest.AppUser, pgtest.AppPassword, pgtest.AppDatabase, cluster.Host, cluster.Port)
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
	fmt.Fprintf(os.Stderr, "\nPostgreSQL %s:%d is up. Connect through pgferry with:\n\n    psql \"host=127.0.0.1 port=%d dbname=%s user=%s password=%s\"\n\nPress Ctrl-C to stop (the throwaway cluster is removed).\n\n",
		cluster.Host, cluster.Port, port, pgtest.AppDatabase, pgtest.AppUser, pgtest.AppPassword)
	return serve(cfg, path, log, level)
}

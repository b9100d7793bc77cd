package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/internal/pgtest"
)

// reloadAdminPassword is the admin console password in the reload test's
// configs; the console shows which settings are in force (SHOW CONFIG).
const reloadAdminPassword = "admin-secret"

// reloadConfig is what TestSIGHUPReloadAppliesValidConfigsAndKeepsServing
// writes to the config file before each SIGHUP.
type reloadConfig struct {
	port         int
	poolSize     int
	withApp2     bool
	extraTopKeys string // raw TOML lines placed among the top-level keys
}

func (rc reloadConfig) render(cluster *pgtest.Cluster) string {
	var b strings.Builder
	fmt.Fprintf(&b, `listen_addr = "127.0.0.1"
listen_port = %d
log_level = "info"
shutdown_timeout = "5s"
default_pool_size = %d
admin_users = ["admin"]
%s
[users.app]
password = %q
[users.admin]
password = %q
[databases.app]
host = %q
port = %d
password = %q
`, rc.port, rc.poolSize, rc.extraTopKeys, pgtest.AppPassword, reloadAdminPassword,
		cluster.Host, cluster.Port, pgtest.AppPassword)
	if rc.withApp2 {
		fmt.Fprintf(&b, `[databases.app2]
host = %q
port = %d
dbname = %q
password = %q
`, cluster.Host, cluster.Port, pgtest.AppDatabase, pgtest.AppPassword)
	}
	return b.String()
}

// writeConfig replaces the config file the way an operator's tooling
// does: write a temporary file next to it, then rename it over the old one,
// so pgferry never reads a half-written file.
func writeConfig(t *testing.T, path, text string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// logWatcher collects the lines a pgferry process writes to stderr (and
// copies them to the test's stderr), so a test can wait for a log event
// instead of sleeping.
type logWatcher struct {
	mu    sync.Mutex // guards lines
	lines []string
	done  chan struct{} // closed when the copy loop has read EOF
}

func (w *logWatcher) copyFrom(r io.Reader, echo io.Writer) {
	defer close(w.done)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(echo, line)
		w.mu.Lock()
		w.lines = append(w.lines, line)
		w.mu.Unlock()
	}
	io.Copy(io.Discard, r) // keep the child from blocking on a full pipe
}

// count returns how many lines so far contain substr.
func (w *logWatcher) count(substr string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, l := range w.lines {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

// waitFor waits until more than seen lines contain substr and returns the
// last such line.
func (w *logWatcher) waitFor(t *testing.T, substr string, seen int) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for w.count(substr) <= seen {
		if time.Now().After(deadline) {
			t.Fatalf("pgferry did not log %q within 15s", substr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := len(w.lines) - 1; i >= 0; i-- {
		if strings.Contains(w.lines[i], substr) {
			return w.lines[i]
		}
	}
	return ""
}

// startFerryWatched runs startFerry with the child's stderr going to a pipe
// that a logWatcher reads. startFerry hands the child os.Stderr, so it is
// pointed at the pipe for the duration of the call.
func startFerryWatched(t *testing.T, bin, config, dsn string) (*exec.Cmd, *logWatcher) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	lw := &logWatcher{done: make(chan struct{})}
	realStderr := os.Stderr
	go lw.copyFrom(r, realStderr)
	// Registered before startFerry's own cleanup, so it runs after the
	// process was killed and the pipe reached EOF.
	t.Cleanup(func() {
		select {
		case <-lw.done:
		case <-time.After(10 * time.Second):
			t.Error("log copier did not finish")
		}
		r.Close()
	})
	os.Stderr = w
	defer func() {
		os.Stderr = realStderr
		w.Close() // the child holds its own copy
	}()
	return startFerry(t, bin, config, dsn), lw
}

// connectWithin polls until a client can connect with dsn and run a query.
func connectWithin(t *testing.T, dsn string, d time.Duration) *pgx.Conn {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := pgx.Connect(ctx, dsn)
		if err == nil {
			var one int
			err = c.QueryRow(ctx, "SELECT 1").Scan(&one)
			if err == nil {
				cancel()
				t.Cleanup(func() { c.Close(context.Background()) })
				return c
			}
			c.Close(context.Background())
		}
		cancel()
		if time.Now().After(deadline) {
			t.Fatalf("cannot connect and query through pgferry within %s: %v", d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mustQuery checks that c, connected since before the reloads, still works
// on the same client connection: the pgferry-issued backend PID is the one
// it got at connect time.
func mustQuery(t *testing.T, c *pgx.Conn, wantPID uint32, step string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var db string
	if err := c.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		t.Fatalf("%s: the client connected before the reload cannot query: %v", step, err)
	}
	if db != pgtest.AppDatabase {
		t.Fatalf("%s: current_database() = %q, want %q", step, db, pgtest.AppDatabase)
	}
	if c.IsClosed() || c.PgConn().PID() != wantPID {
		t.Fatalf("%s: the old client's connection was replaced", step)
	}
}

// showConfigValue reads a setting in force from the admin console.
func showConfigValue(t *testing.T, adminDSN, key string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		t.Fatalf("admin console: %v", err)
	}
	defer c.Close(context.Background())
	rows, err := c.Query(ctx, "SHOW CONFIG", pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatalf("SHOW CONFIG: %v", err)
	}
	defer rows.Close()
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatalf("SHOW CONFIG: %v", err)
		}
		if vals[0] == key {
			return fmt.Sprint(vals[1])
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("SHOW CONFIG: %v", err)
	}
	t.Fatalf("SHOW CONFIG has no %s", key)
	return ""
}

func TestSIGHUPReloadAppliesValidConfigsAndKeepsServing(t *testing.T) {
	cluster, err := pgtest.Start(pgtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Stop()

	dir := t.TempDir()
	bin := buildPgferry(t, dir)
	ports, err := pgtest.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	port, otherPort := ports[0], ports[1]
	dsn := func(p int, db, user, password string) string {
		return fmt.Sprintf("host=127.0.0.1 port=%d dbname=%s user=%s password=%s sslmode=disable connect_timeout=2",
			p, db, user, password)
	}
	appDSN := dsn(port, "app", pgtest.AppUser, pgtest.AppPassword)
	app2DSN := dsn(port, "app2", pgtest.AppUser, pgtest.AppPassword)
	adminDSN := dsn(port, "pgbouncer", "admin", reloadAdminPassword)

	config := filepath.Join(dir, "pgferry.toml")
	// SIGHUP alone: the file watcher would reload these changes too.
	cfg := reloadConfig{port: port, poolSize: 2, extraTopKeys: "watch_config = false"}
	writeConfig(t, config, cfg.render(cluster))
	ferry, logs := startFerryWatched(t, bin, config, appDSN)

	old := connectWithin(t, appDSN, 10*time.Second)
	oldPID := old.PgConn().PID()
	if got := showConfigValue(t, adminDSN, "default_pool_size"); got != "2" {
		t.Fatalf("default_pool_size at start = %s, want 2", got)
	}
	hup := func() {
		t.Helper()
		if err := ferry.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatalf("SIGHUP: %v", err)
		}
	}
	const (
		applied       = "configuration reloaded"
		rejectedParse = "reload rejected: invalid config"
		rejectedApply = "reload rejected; the old config stays in force"
	)

	t.Run("new database and pool size apply live", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, app2DSN); err == nil {
			c.Close(context.Background())
			t.Fatal("app2 is reachable before it is configured")
		}
		cfg.poolSize, cfg.withApp2 = 3, true
		writeConfig(t, config, cfg.render(cluster))
		seen := logs.count(applied)
		hup()
		logs.waitFor(t, applied, seen)
		connectWithin(t, app2DSN, 10*time.Second)
		if got := showConfigValue(t, adminDSN, "default_pool_size"); got != "3" {
			t.Errorf("default_pool_size after reload = %s, want 3", got)
		}
		mustQuery(t, old, oldPID, "after a valid reload")
	})

	t.Run("invalid config is rejected and the old one stays", func(t *testing.T) {
		bad := cfg
		bad.poolSize = 7
		bad.extraTopKeys = "no_such_key = 1"
		writeConfig(t, config, bad.render(cluster))
		seen := logs.count(rejectedParse)
		hup()
		line := logs.waitFor(t, rejectedParse, seen)
		if !strings.Contains(line, "no_such_key") {
			t.Errorf("rejection does not name the unknown key: %s", line)
		}
		if err := ferry.Process.Signal(syscall.Signal(0)); err != nil {
			t.Fatalf("pgferry is gone after a bad reload: %v", err)
		}
		connectWithin(t, app2DSN, 5*time.Second)
		if got := showConfigValue(t, adminDSN, "default_pool_size"); got != "3" {
			t.Errorf("default_pool_size after a rejected reload = %s, want 3 (the old value)", got)
		}
		mustQuery(t, old, oldPID, "after a rejected reload")
	})

	t.Run("listen_port change is restart-only", func(t *testing.T) {
		moved := cfg
		moved.port = otherPort
		moved.poolSize = 5
		writeConfig(t, config, moved.render(cluster))
		seen := logs.count(rejectedApply)
		hup()
		line := logs.waitFor(t, rejectedApply, seen)
		if !strings.Contains(line, "listen_port") {
			t.Errorf("rejection does not name listen_port: %s", line)
		}
		connectWithin(t, appDSN, 5*time.Second)
		connectWithin(t, app2DSN, 5*time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, dsn(otherPort, "app", pgtest.AppUser, pgtest.AppPassword)); err == nil {
			c.Close(context.Background())
			t.Error("pgferry listens on the new listen_port after a rejected reload")
		}
		if got := showConfigValue(t, adminDSN, "default_pool_size"); got != "3" {
			t.Errorf("default_pool_size after a rejected reload = %s, want 3: a rejected reload must apply nothing", got)
		}
		mustQuery(t, old, oldPID, "after a restart-only change")
	})

	// A reload back to the running config is accepted again: the rejected
	// attempts left nothing behind.
	writeConfig(t, config, cfg.render(cluster))
	seen := logs.count(applied)
	hup()
	logs.waitFor(t, applied, seen)
	mustQuery(t, old, oldPID, "after restoring the config")

	old.Close(context.Background())
	if err := ferry.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := ferry.Wait(); err != nil {
		t.Errorf("pgferry did not exit cleanly: %v", err)
	}
}

// TestAConfigMapUpdateIsReloadedWithoutASignal mounts the config as the
// kubelet mounts a ConfigMap (a symlink through "..data") and updates it
// the kubelet's way, with no SIGHUP: pgferry reloads by itself, and a
// rejected file leaves the old config in force.
func TestAConfigMapUpdateIsReloadedWithoutASignal(t *testing.T) {
	cluster, err := pgtest.Start(pgtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Stop()
	dir := t.TempDir()
	bin := buildPgferry(t, dir)
	port, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	mount := filepath.Join(dir, "config")
	if err := os.Mkdir(mount, 0o755); err != nil {
		t.Fatal(err)
	}
	version := 0
	update := func(text string) {
		t.Helper()
		version++
		data := filepath.Join(mount, fmt.Sprintf("..2026_12_05_%d", version))
		if err := os.Mkdir(data, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(data, "pgferry.toml"), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(mount, "..data_tmp")
		if err := os.Symlink(filepath.Base(data), tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(mount, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	cfg := reloadConfig{port: port, poolSize: 2}
	update(cfg.render(cluster))
	config := filepath.Join(mount, "pgferry.toml")
	if err := os.Symlink(filepath.Join("..data", "pgferry.toml"), config); err != nil {
		t.Fatal(err)
	}
	appDSN := fmt.Sprintf("host=127.0.0.1 port=%d dbname=app user=%s password=%s sslmode=disable connect_timeout=2", port, pgtest.AppUser, pgtest.AppPassword)
	adminDSN := fmt.Sprintf("host=127.0.0.1 port=%d dbname=pgbouncer user=admin password=%s sslmode=disable connect_timeout=2", port, reloadAdminPassword)
	_, logs := startFerryWatched(t, bin, config, appDSN)

	seen := logs.count("configuration reloaded")
	cfg.poolSize = 4
	update(cfg.render(cluster))
	logs.waitFor(t, "configuration reloaded", seen)
	if got := showConfigValue(t, adminDSN, "default_pool_size"); got != "4" {
		t.Fatalf("default_pool_size after the ConfigMap update = %s, want 4", got)
	}

	seen = logs.count("reload rejected")
	bad := cfg
	bad.poolSize, bad.extraTopKeys = 9, "no_such_key = 1"
	update(bad.render(cluster))
	if line := logs.waitFor(t, "reload rejected", seen); !strings.Contains(line, "no_such_key") {
		t.Errorf("the rejection does not say why: %s", line)
	}
	if got := showConfigValue(t, adminDSN, "default_pool_size"); got != "4" {
		t.Fatalf("default_pool_size after a rejected update = %s, want 4 (the old value)", got)
	}
}

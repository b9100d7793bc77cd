package router_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	osexec "os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/internal/pgtest"
	"github.com/pgferry/pgferry/router"
)

// adminShowCommands are the SHOW commands both pgferry and PgBouncer 1.18
// answer.
var adminShowCommands = []string{
	"POOLS", "STATS", "STATS_TOTALS", "STATS_AVERAGES", "TOTALS", "CLIENTS", "SERVERS",
	"DATABASES", "CONFIG", "VERSION", "LISTS", "USERS",
}

func adminDSN(f *ferrytest.Ferry) string { return f.DSN("pgbouncer", "admin", "admin-secret") }
func statsDSN(f *ferrytest.Ferry) string { return f.DSN("pgbouncer", "stats", "stats-secret") }

// adminResult is one console answer: column names, text rows, the error.
type adminResult struct {
	cols []string
	oids []uint32
	rows [][]string
	tag  string
}

// adminExec runs sql with the simple query protocol.
func adminExec(pc *pgconn.PgConn, sql string) (adminResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	results, err := pc.Exec(ctx, sql).ReadAll()
	if err != nil {
		return adminResult{}, err
	}
	if len(results) != 1 {
		return adminResult{}, fmt.Errorf("%d results", len(results))
	}
	r := results[0]
	if r.Err != nil {
		return adminResult{}, r.Err
	}
	var out adminResult
	for _, fd := range r.FieldDescriptions {
		out.cols = append(out.cols, fd.Name)
		out.oids = append(out.oids, fd.DataTypeOID)
	}
	for _, row := range r.Rows {
		var vs []string
		for _, v := range row {
			vs = append(vs, string(v))
		}
		out.rows = append(out.rows, vs)
	}
	out.tag = r.CommandTag.String()
	return out, nil
}

func mustAdmin(t *testing.T, pc *pgconn.PgConn, sql string) adminResult {
	t.Helper()
	r, err := adminExec(pc, sql)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return r
}

// row returns the first row whose column col equals val, as a map.
func (r adminResult) row(col, val string) map[string]string {
	i := slices.Index(r.cols, col)
	for _, row := range r.rows {
		if i >= 0 && row[i] == val {
			m := make(map[string]string, len(r.cols))
			for j, c := range r.cols {
				m[c] = row[j]
			}
			return m
		}
	}
	return nil
}

// wantPgError asserts that err is a PostgreSQL error with SQLSTATE code and
// message msg.
func wantPgError(t *testing.T, err error, code, msg string) {
	t.Helper()
	if pe := expectPgError(t, err, code); pe.Message != msg {
		t.Fatalf("got %s %q, want %s %q", pe.Code, pe.Message, code, msg)
	}
}

func TestAdminConsoleAnswersEveryShowCommandThroughPsql(t *testing.T) {
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	ctx := testContext(t)
	app := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := app.Exec(context.Background(), "select 1"); err != nil {
		t.Fatal(err)
	}
	psql, err := osexec.LookPath("psql")
	if err != nil {
		t.Fatalf("psql is required: %v", err)
	}
	for _, cmd := range append(slices.Clone(adminShowCommands), "STATE", "HELP") {
		t.Run(cmd, func(t *testing.T) {
			out, err := osexec.Command(psql, "-X", "-A", "-F", "|", "-v", "ON_ERROR_STOP=1",
				"-c", "show "+strings.ToLower(cmd)+";", adminDSN(f)).CombinedOutput()
			if err != nil {
				t.Fatalf("psql SHOW %s: %v\n%s", cmd, err, out)
			}
			if cmd == "HELP" {
				if !strings.Contains(string(out), "SHOW HELP|CONFIG") {
					t.Fatalf("SHOW HELP printed:\n%s", out)
				}
				return
			}
			if !strings.Contains(string(out), "row") {
				t.Fatalf("SHOW %s printed no result:\n%s", cmd, out)
			}
		})
	}

	pc := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	if got := pc.ParameterStatus("server_version"); got != "15.0 (pgferry)" {
		t.Errorf("server_version = %q", got)
	}
	pools := mustAdmin(t, pc, "SHOW POOLS")
	p := pools.row("database", "app")
	if p == nil || p["user"] != "app" || p["cl_active"] != "1" || p["pool_mode"] != "transaction" || p["sv_idle"] == "0" {
		t.Errorf("SHOW POOLS app row = %v", p)
	}
	stats := mustAdmin(t, pc, "show stats;")
	if s := stats.row("database", "app"); s == nil || s["total_xact_count"] == "0" || s["total_client_login_count"] != "1" {
		t.Errorf("SHOW STATS app row = %v", s)
	}
	clients := mustAdmin(t, pc, "SHOW CLIENTS")
	if c := clients.row("user", "app"); c == nil || c["database"] != "app" || c["state"] != "active" || c["addr"] != "127.0.0.1" {
		t.Errorf("SHOW CLIENTS app row = %v", c)
	}
	if c := clients.row("user", "admin"); c == nil || c["database"] != "pgbouncer" {
		t.Errorf("SHOW CLIENTS admin row = %v", c)
	}
	servers := mustAdmin(t, pc, "SHOW SERVERS")
	if s := servers.row("database", "app"); s == nil || s["state"] != "idle" || s["remote_pid"] == "0" {
		t.Errorf("SHOW SERVERS app row = %v", s)
	}
	dbs := mustAdmin(t, pc, "SHOW DATABASES")
	if d := dbs.row("name", "app"); d == nil || d["port"] != strconv.Itoa(cluster.Port) || d["pool_size"] != "5" {
		t.Errorf("SHOW DATABASES app row = %v", d)
	}
	cfg := mustAdmin(t, pc, "SHOW CONFIG")
	if c := cfg.row("key", "default_pool_size"); c == nil || c["value"] != "5" || c["default"] != "20" || c["changeable"] != "yes" {
		t.Errorf("SHOW CONFIG default_pool_size = %v", c)
	}
	if c := cfg.row("key", "listen_port"); c == nil || c["changeable"] != "no" {
		t.Errorf("SHOW CONFIG listen_port = %v", c)
	}
	if v := mustAdmin(t, pc, "SHOW VERSION"); len(v.rows) != 1 || !strings.HasPrefix(v.rows[0][0], "pgferry ") {
		t.Errorf("SHOW VERSION = %v", v.rows)
	}
	if u := mustAdmin(t, pc, "SHOW USERS"); u.row("name", "admin") == nil {
		t.Errorf("SHOW USERS = %v", u.rows)
	}
	if s := mustAdmin(t, pc, "SHOW STATE"); s.row("key", "active")["value"] != "yes" {
		t.Errorf("SHOW STATE = %v", s.rows)
	}
}

func TestAdminConsolePauseHoldsClientsUntilResume(t *testing.T) {
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	ctx := testContext(t)
	app := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := app.Exec(context.Background(), "select 1"); err != nil {
		t.Fatal(err)
	}
	pc := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	if _, err := adminExec(pc, "RESUME app"); err != nil {
		wantPgError(t, err, "08P01", "database app is not paused")
	} else {
		t.Fatal("RESUME of a running database succeeded")
	}
	if r := mustAdmin(t, pc, "PAUSE app"); r.tag != "PAUSE" {
		t.Fatalf("PAUSE tag %q", r.tag)
	}
	if p := mustAdmin(t, pc, "SHOW POOLS").row("database", "app"); p["paused"] != "1" || p["sv_idle"] != "0" {
		t.Fatalf("paused pool = %v", p)
	}
	_, err := adminExec(pc, "PAUSE")
	wantPgError(t, err, "08P01", "already suspended/paused")

	done := make(chan error, 1)
	go func() {
		_, err := app.Exec(context.Background(), "select 2")
		done <- err
	}()
	ferrytest.Eventually(t, 10*time.Second, "a waiting client", func() (bool, error) {
		return mustAdmin(t, pc, "SHOW POOLS").row("database", "app")["cl_waiting"] == "1", nil
	})
	select {
	case err := <-done:
		t.Fatalf("query ran while paused: %v", err)
	default:
	}
	mustAdmin(t, pc, "RESUME app")
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("query still blocked after RESUME")
	}
	_, err = adminExec(pc, "PAUSE nosuch")
	wantPgError(t, err, "08P01", "no such database: nosuch")
}

func TestAdminConsoleReconnectReplacesServerConnections(t *testing.T) {
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	ctx := testContext(t)
	app := ferrytest.Connect(t, ctx, f.AppDSN())
	var before, after int
	if err := app.QueryRow(context.Background(), "select pg_backend_pid()").Scan(&before); err != nil {
		t.Fatal(err)
	}
	pc := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	if r := mustAdmin(t, pc, "RECONNECT app"); r.tag != "RECONNECT" {
		t.Fatalf("tag %q", r.tag)
	}
	if err := app.QueryRow(context.Background(), "select pg_backend_pid()").Scan(&after); err != nil {
		t.Fatal(err)
	}
	if before == after {
		t.Fatalf("server pid %d survived RECONNECT", before)
	}
}

func TestAdminConsoleKillDropsClientsAndPausesUntilResume(t *testing.T) {
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	ctx := testContext(t)
	app := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := app.Exec(context.Background(), "select 1"); err != nil {
		t.Fatal(err)
	}
	pc := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	_, err := adminExec(pc, "KILL")
	wantPgError(t, err, "08P01", "a database is required")
	mustAdmin(t, pc, "KILL app")
	ferrytest.Eventually(t, 10*time.Second, "the killed client to go", func() (bool, error) {
		return mustAdmin(t, pc, "SHOW CLIENTS").row("user", "app") == nil, nil
	})
	if _, err := app.Exec(context.Background(), "select 1"); err == nil {
		t.Fatal("killed client still works")
	}
	if p := mustAdmin(t, pc, "SHOW POOLS").row("database", "app"); p["paused"] != "1" {
		t.Fatalf("pool after KILL = %v", p)
	}
	mustAdmin(t, pc, "RESUME app")
	app2 := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := app2.Exec(context.Background(), "select 1"); err != nil {
		t.Fatal(err)
	}
}

func TestAdminConsoleRefusesUsersOutsideAdminAndStatsUsers(t *testing.T) {
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	_, err := pgconn.Connect(context.Background(), f.DSN("pgbouncer", ferrytest.User, ferrytest.Password))
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Severity != "FATAL" || pe.Code != "08P01" || pe.Message != "not allowed" {
		t.Fatalf("got %v, want FATAL 08P01 not allowed", err)
	}
	_, err = pgconn.Connect(context.Background(), f.DSN("pgbouncer", "admin", "wrong"))
	if !errors.As(err, &pe) || pe.Code != "28P01" {
		t.Fatalf("wrong admin password: got %v", err)
	}
}

func TestAdminConsoleStatsUserMayOnlyShow(t *testing.T) {
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	ctx := testContext(t)
	pc := ferrytest.ConnectPgConn(t, ctx, statsDSN(f))
	mustAdmin(t, pc, "SHOW POOLS")
	mustAdmin(t, pc, "SHOW CONFIG")
	for _, cmd := range []string{"PAUSE", "RESUME app", "RECONNECT", "KILL app", "RELOAD", "SHUTDOWN", "SUSPEND"} {
		_, err := adminExec(pc, cmd)
		wantPgError(t, err, "08P01", "admin access needed")
	}
	// The session lives on after the refusals.
	mustAdmin(t, pc, "SHOW VERSION")
}

func TestAdminConsoleRejectsInvalidCommandsAndTheExtendedProtocol(t *testing.T) {
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	ctx := testContext(t)
	pc := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	for _, sql := range []string{"SELECT 1", "show foo", ";"} {
		_, err := adminExec(pc, sql)
		wantPgError(t, err, "08P01", "invalid command '"+sql+"', use SHOW HELP;")
	}
	_, err := adminExec(pc, "SUSPEND")
	wantPgError(t, err, "0A000", "SUSPEND is not supported by pgferry")

	conn, err := pgx.Connect(context.Background(), adminDSN(f))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var ignored string
	err = conn.QueryRow(context.Background(), "SHOW VERSION").Scan(&ignored) // Parse, Describe, Sync
	wantPgError(t, err, "08P01", "the admin console supports only simple queries")
	rows, err := conn.Query(context.Background(), "SHOW VERSION", pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatal(err)
	}
	var v string
	for rows.Next() {
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
	}
	if err := rows.Err(); err != nil || !strings.HasPrefix(v, "pgferry") {
		t.Fatalf("SHOW VERSION after an extended-protocol error: %q, %v", v, err)
	}
}

func TestAdminConsoleReloadAndShutdownUseTheAdminHooks(t *testing.T) {
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	ctx := testContext(t)
	pc := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	_, err := adminExec(pc, "RELOAD")
	wantPgError(t, err, "F0000", "RELOAD failed, see logs for additional details")
	_, err = adminExec(pc, "SHUTDOWN")
	wantPgError(t, err, "0A000", "SHUTDOWN is not available: no shutdown action is configured")

	// Each RELOAD takes its outcome from reloads; the channel also orders
	// the hook's goroutine after the test's.
	reloads := make(chan error, 1)
	shutdown := make(chan struct{}, 1)
	f.Server.SetAdminHooks(router.AdminHooks{
		Reload:   func() error { return <-reloads },
		Shutdown: func() { shutdown <- struct{}{} },
	})
	t.Cleanup(func() { f.Server.SetAdminHooks(router.AdminHooks{}) })
	reloads <- nil
	if r := mustAdmin(t, pc, "reload;"); r.tag != "RELOAD" || len(reloads) != 0 {
		t.Fatalf("RELOAD: tag %q, hook called: %v", r.tag, len(reloads) == 0)
	}
	reloads <- errors.New("bad config")
	_, err = adminExec(pc, "RELOAD")
	wantPgError(t, err, "F0000", "RELOAD failed, see logs for additional details")
	if r := mustAdmin(t, pc, "SHUTDOWN"); r.tag != "SHUTDOWN" {
		t.Fatalf("SHUTDOWN tag %q", r.tag)
	}
	select {
	case <-shutdown:
	default:
		t.Fatal("SHUTDOWN did not call the hook")
	}

	// What cmd does on that signal: a graceful shutdown ends the console
	// session with FATAL 57P01 instead of waiting for it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if cut := f.Server.Shutdown(ctx); cut != 0 {
		t.Fatalf("Shutdown cut %d sessions; the admin session should have left by itself", cut)
	}
	_, err = adminExec(pc, "SHOW VERSION")
	if err == nil {
		t.Fatal("admin session survived Shutdown")
	}
}

// TestAdminColumnsMatchPgBouncer runs Debian's PgBouncer 1.18 in front of
// the same cluster and checks that every SHOW command of pgferry starts
// with PgBouncer's columns, with the same names, order and types.
func TestAdminColumnsMatchPgBouncer(t *testing.T) {
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	ctx := testContext(t)
	bouncer := startPgBouncer(t)

	// Traffic through both, so the app pools exist.
	for _, dsn := range []string{f.AppDSN(), bouncer.dsn("app", ferrytest.User, ferrytest.Password)} {
		pc := ferrytest.ConnectPgConn(t, ctx, dsn)
		if _, err := pc.Exec(context.Background(), "select 1").ReadAll(); err != nil {
			t.Fatal(err)
		}
	}
	ours := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	theirs := ferrytest.ConnectPgConn(t, ctx, bouncer.dsn("pgbouncer", "admin", "admin-secret"))
	for _, cmd := range adminShowCommands {
		t.Run(cmd, func(t *testing.T) {
			want, err := adminExec(theirs, "SHOW "+cmd)
			if err != nil {
				t.Fatalf("PgBouncer: %v\n%s", err, bouncer.log())
			}
			got := mustAdmin(t, ours, "SHOW "+cmd)
			if len(got.cols) < len(want.cols) || !slices.Equal(got.cols[:len(want.cols)], want.cols) {
				t.Fatalf("columns\n got  %v\n want %v first", got.cols, want.cols)
			}
			if !slices.Equal(got.oids[:len(want.oids)], want.oids) {
				t.Errorf("column types\n got  %v\n want %v first", got.oids[:len(want.oids)], want.oids)
			}
			if cmd == "LISTS" {
				for _, row := range want.rows {
					if got.row("list", row[0]) == nil {
						t.Errorf("SHOW LISTS lacks %q", row[0])
					}
				}
			}
		})
	}
	// The same refusals, word for word.
	stats := ferrytest.ConnectPgConn(t, ctx, bouncer.dsn("pgbouncer", "stats", "stats-secret"))
	_, err := adminExec(stats, "PAUSE")
	wantPgError(t, err, "08P01", "admin access needed")
	_, err = pgconn.Connect(context.Background(), bouncer.dsn("pgbouncer", ferrytest.User, ferrytest.Password))
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "08P01" || pe.Message != "not allowed" {
		t.Fatalf("PgBouncer refusal: %v", err)
	}
}

type pgBouncer struct {
	port    int
	logFile string
}

func (b *pgBouncer) dsn(db, user, password string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d dbname=%s user=%s password=%s sslmode=disable", b.port, db, user, password)
}

func (b *pgBouncer) log() string {
	data, _ := os.ReadFile(b.logFile)
	return string(data)
}

// startPgBouncer runs /usr/sbin/pgbouncer (as the postgres user when the
// test runs as root, since PgBouncer refuses root) in front of cluster's
// app database, with the users of ferrytest.Config. A missing binary
// fails the test (.ci/run installs it).
func startPgBouncer(t *testing.T) *pgBouncer {
	t.Helper()
	bin := "/usr/sbin/pgbouncer"
	if _, err := os.Stat(bin); err != nil {
		p, lerr := osexec.LookPath("pgbouncer")
		if lerr != nil {
			t.Fatalf("pgbouncer not found in /usr/sbin or PATH (install Debian's pgbouncer package): %v", err)
		}
		bin = p
	}
	dir, err := os.MkdirTemp("", "pgferry-pgbouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var uid, gid = -1, -1
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running pgbouncer as root needs the postgres OS user: %v", err)
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
	}
	port, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	b := &pgBouncer{port: port, logFile: filepath.Join(dir, "pgbouncer.log")}
	files := map[string]string{
		"users.txt": fmt.Sprintf("%q %q\n%q %q\n%q %q\n", "admin", "admin-secret", "stats", "stats-secret",
			ferrytest.User, ferrytest.Password),
		"pgbouncer.ini": fmt.Sprintf(`[databases]
app = host=%s port=%d dbname=%s user=%s password=%s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = plain
auth_file = %s
admin_users = admin
stats_users = stats
pool_mode = transaction
default_pool_size = 5
logfile = %s
`, cluster.Host, cluster.Port, pgtest.AppDatabase, pgtest.AppUser, pgtest.AppPassword,
			port, filepath.Join(dir, "users.txt"), b.logFile),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if uid >= 0 {
		for _, p := range []string{dir, filepath.Join(dir, "users.txt"), filepath.Join(dir, "pgbouncer.ini")} {
			if err := os.Chown(p, uid, gid); err != nil {
				t.Fatal(err)
			}
		}
	}
	args := []string{bin, filepath.Join(dir, "pgbouncer.ini")}
	if uid >= 0 {
		args = append([]string{"runuser", "-u", "postgres", "--"}, args...)
	}
	cmd := osexec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start pgbouncer: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		// The process group holds runuser and pgbouncer; SIGTERM is
		// PgBouncer's immediate shutdown.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
		if err == nil {
			c.Close()
			return b
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("pgbouncer exited: %v\n%s\n%s", err, out, b.log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgbouncer did not listen on %d: %v\n%s", port, err, b.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestShowStatsCountsClientBytesAndQueryTime(t *testing.T) {
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	ctx := testContext(t)
	app := ferrytest.Connect(t, ctx, f.AppDSN())
	for i := 0; i < 5; i++ {
		if _, err := app.Exec(ctx, "select pg_sleep(0.02), repeat('x', 1000)"); err != nil {
			t.Fatal(err)
		}
	}
	pc := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	num := func(row map[string]string, col string) int64 {
		n, err := strconv.ParseInt(row[col], 10, 64)
		if err != nil {
			t.Fatalf("%s = %q: %v", col, row[col], err)
		}
		return n
	}
	s := mustAdmin(t, pc, "SHOW STATS").row("database", "app")
	if s == nil {
		t.Fatal("no SHOW STATS row for app")
	}
	// Five answers of over 1,000 bytes each went to the client; five
	// queries of 20 ms ran.
	if got := num(s, "total_sent"); got < 5000 {
		t.Errorf("total_sent = %d, want at least 5000", got)
	}
	if got := num(s, "total_received"); got < int64(5*len("select pg_sleep(0.02), repeat('x', 1000)")) {
		t.Errorf("total_received = %d", got)
	}
	if got := num(s, "total_query_time"); got < 5*20000 || got > num(s, "total_xact_time") {
		t.Errorf("total_query_time = %d us, want at least 100000 and at most total_xact_time (%s)", got, s["total_xact_time"])
	}
	if num(s, "avg_query_time") < 20000 {
		t.Errorf("avg_query_time = %s us, want at least 20000", s["avg_query_time"])
	}
	totals := mustAdmin(t, pc, "SHOW TOTALS")
	if r := totals.row("name", "total_sent"); r == nil || r["value"] == "0" {
		t.Errorf("SHOW TOTALS total_sent = %v", r)
	}
}

// TestAStatementRefusedInsideATransactionCountsNoQueryTimeItDidNotTake
// checks SHOW STATS after pgferry refused a pinning statement inside a
// transaction (pin_on_session_state = false): the server raises the error,
// and the time of that round trip, not the time since pgferry started, is
// what total_query_time gains.
func TestAStatementRefusedInsideATransactionCountsNoQueryTimeItDidNotTake(t *testing.T) {
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	cfg.PinOnSessionState = false
	f := ferrytest.Start(t, cfg)
	time.Sleep(time.Second) // pgferry's age, which a wrong start would count
	app := ferrytest.Connect(t, ctx, f.AppDSN())
	tx, err := app.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "create temp table refused_tmp (x int)"); err == nil {
		t.Fatal("a temporary table was created with pin_on_session_state = false")
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	pc := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	s := mustAdmin(t, pc, "SHOW STATS").row("database", "app")
	if s == nil {
		t.Fatal("no SHOW STATS row for app")
	}
	query, err1 := strconv.ParseInt(s["total_query_time"], 10, 64)
	xact, err2 := strconv.ParseInt(s["total_xact_time"], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("total_query_time %q, total_xact_time %q", s["total_query_time"], s["total_xact_time"])
	}
	if query > xact {
		t.Errorf("total_query_time = %d us, more than total_xact_time = %d us: the refused statement counted time it did not take", query, xact)
	}
}

func TestWaitCloseReturnsOnceEveryConnectionFromBeforeReconnectIsGone(t *testing.T) {
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	ctx := testContext(t)
	app := ferrytest.Connect(t, ctx, f.AppDSN())
	tx, err := app.Begin(ctx) // holds a server connection across RECONNECT
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "select 1"); err != nil {
		t.Fatal(err)
	}
	pc := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	mustAdmin(t, pc, "RECONNECT app")
	done := make(chan error, 1)
	go func() {
		_, err := adminExec(pc, "WAIT_CLOSE app")
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("WAIT_CLOSE returned (%v) while a connection from before RECONNECT was still lent", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("WAIT_CLOSE: %v", err)
	}
}

func TestKillClientEndsOneClientAndUnsupportedShowCommandsSaySo(t *testing.T) {
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	ctx := testContext(t)
	victim := ferrytest.Connect(t, ctx, f.AppDSN())
	pc := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	clients := mustAdmin(t, pc, "SHOW CLIENTS")
	row := clients.row("user", "app")
	if row == nil {
		t.Fatal("no app client in SHOW CLIENTS")
	}
	bystander := ferrytest.Connect(t, ctx, f.AppDSN())
	mustAdmin(t, pc, "KILL_CLIENT "+row["ptr"])
	if err := victim.QueryRow(ctx, "select 1").Scan(new(int)); err == nil {
		t.Fatalf("the client KILL_CLIENT %s named still runs queries", row["ptr"])
	}
	if err := bystander.QueryRow(ctx, "select 1").Scan(new(int)); err != nil {
		t.Fatalf("another client was hit by KILL_CLIENT: %v", err)
	}
	if _, err := adminExec(pc, "KILL_CLIENT 0xdeadbeef"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("KILL_CLIENT of an unknown client: %v", err)
	}
	if _, err := adminExec(pc, "SHOW FDS"); err == nil || !strings.Contains(err.Error(), "SHOW FDS is not supported by pgferry") {
		t.Fatalf("SHOW FDS: %v", err)
	}
	if _, err := adminExec(pc, "SHOW PEERS"); err != nil {
		t.Fatalf("SHOW PEERS: %v", err)
	}
}

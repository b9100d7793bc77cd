package router_test

// The admin console next to a real PgBouncer: 1.25.2's columns for every
// SHOW command (where that binary is installed) and Debian's refusals.
// startPgBouncer runs a PgBouncer in front of the package's cluster.

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

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/internal/pgtest"
)

// pgBouncer125 is where the PgBouncer 1.25.2 binary the project compares
// with lives next to the repository (shared/anchors/pgbouncer, see its
// README), or PGFERRY_PGBOUNCER_125; "" when it is not there.
func pgBouncer125(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("PGFERRY_PGBOUNCER_125")
	if bin == "" {
		bin = filepath.Join("..", "..", "shared", "anchors", "pgbouncer", "pgbouncer")
	}
	out, err := osexec.Command(bin, "--version").Output()
	if err != nil || !strings.Contains(string(out), "PgBouncer 1.25.2") {
		return ""
	}
	abs, err := filepath.Abs(bin)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// TestAdminColumnsMatchPgBouncer125 runs PgBouncer 1.25.2 in front of the
// same cluster, where that binary is installed (it skips otherwise:
// router/admin's TestColumnsArePgBouncer125s holds the same lists, read
// from it by hand), and checks that every SHOW command of pgferry starts
// with PgBouncer's columns, with the same names, order and types (but SHOW
// CLIENTS' and SERVERS' id: numeric in pgferry, int4 there).
func TestAdminColumnsMatchPgBouncer125(t *testing.T) {
	t.Parallel()
	bin := pgBouncer125(t)
	if bin == "" {
		t.Skip("PgBouncer 1.25.2 is not installed (shared/anchors/pgbouncer or PGFERRY_PGBOUNCER_125)")
	}
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	ctx := testContext(t)
	bouncer := startPgBouncer(t, bin)

	// Traffic through both, so the app pools exist.
	for _, dsn := range []string{f.AppDSN(), bouncer.dsn("app", ferrytest.User, ferrytest.Password)} {
		pc := ferrytest.ConnectPgConn(t, ctx, dsn)
		if _, err := pc.Exec(context.Background(), "select 1").ReadAll(); err != nil {
			t.Fatal(err)
		}
	}
	ours := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	theirs := ferrytest.ConnectPgConn(t, ctx, bouncer.dsn("pgbouncer", "admin", "admin-secret"))
	for _, cmd := range append(slices.Clone(adminShowCommands), "STATE", "PEERS") {
		t.Run(cmd, func(t *testing.T) {
			want, err := adminExec(theirs, "SHOW "+cmd)
			if err != nil {
				t.Fatalf("PgBouncer: %v\n%s", err, bouncer.log())
			}
			got := mustAdmin(t, ours, "SHOW "+cmd)
			if len(got.cols) < len(want.cols) || !slices.Equal(got.cols[:len(want.cols)], want.cols) {
				t.Fatalf("columns\n got  %v\n want %v first", got.cols, want.cols)
			}
			wantOIDs := slices.Clone(want.oids)
			if i := slices.Index(want.cols, "id"); i >= 0 && (cmd == "CLIENTS" || cmd == "SERVERS") {
				wantOIDs[i] = 1700 // numeric: pgferry's ids are 64-bit
			}
			if !slices.Equal(got.oids[:len(want.oids)], wantOIDs) {
				t.Errorf("column types\n got  %v\n want %v first", got.oids[:len(want.oids)], wantOIDs)
			}
			// SHOW LISTS and TOTALS answer a row per name: the names
			// are PgBouncer's too.
			for c, key := range map[string]string{"LISTS": "list", "TOTALS": "name"} {
				if cmd != c {
					continue
				}
				for _, row := range want.rows {
					if got.row(key, row[0]) == nil {
						t.Errorf("SHOW %s lacks %q", cmd, row[0])
					}
				}
			}
		})
	}
}

// TestAdminRefusalsMatchPgBouncer runs Debian's PgBouncer in front of the
// same cluster and checks its refusals are pgferry's, word for word.
func TestAdminRefusalsMatchPgBouncer(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	bouncer := startPgBouncer(t, "")
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

// startPgBouncer runs bin, or /usr/sbin/pgbouncer when bin is "" (as the
// postgres user when the test runs as root, since PgBouncer refuses root)
// in front of cluster's app database, with the users of ferrytest.Config.
// A missing /usr/sbin/pgbouncer fails the test (.ci/run installs it).
func startPgBouncer(t *testing.T, bin string) *pgBouncer {
	t.Helper()
	if bin == "" {
		bin = "/usr/sbin/pgbouncer"
	}
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
	cmd := osexec.Command(bin, filepath.Join(dir, "pgbouncer.ini"))
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if uid >= 0 {
		// As the postgres user, without runuser: on SIGTERM runuser
		// waits two seconds before it exits, whenever its child ends.
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	}
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start pgbouncer: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		// SIGTERM is PgBouncer's immediate shutdown (the process
		// group, in case it forked).
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

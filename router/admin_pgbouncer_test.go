package router_test

// The admin console next to a real PgBouncer: the same columns for every
// SHOW command and the same refusals. startPgBouncer runs Debian's
// PgBouncer in front of the package's cluster.

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

// TestAdminColumnsMatchPgBouncer runs Debian's PgBouncer 1.18 in front of
// the same cluster and checks that every SHOW command of pgferry starts
// with PgBouncer's columns, with the same names, order and types.
func TestAdminColumnsMatchPgBouncer(t *testing.T) {
	t.Parallel()
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

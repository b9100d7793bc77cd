package auth

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/pgferry/pgferry/internal/pgtest"
)

// testCluster is the throwaway PostgreSQL cluster shared by this package's
// tests, started by TestMain.
//
// TODO(pgferry): move this into internal/pgtest once that harness exists;
// it is kept here, minimal, so that package auth does not wait on it.
var testCluster *pgCluster

func TestMain(m *testing.M) {
	flag.Parse()
	if pgtest.FuzzWorker() {
		// Fuzz workers run only the fuzz function: no cluster needed.
		os.Exit(m.Run())
	}
	c, err := startPGCluster()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start PostgreSQL:", err)
		os.Exit(1)
	}
	testCluster = c
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		c.stop()
		os.Exit(code)
	}))
}

type pgCluster struct {
	dir     string // data directory and socket directory parent
	sockDir string
	port    int
	cred    *syscall.Credential // non-nil when running as root
}

// startPGCluster initdb's a cluster in a temp dir (as the postgres user when
// running as root, since PostgreSQL refuses to run as root), with trust for
// the local socket and md5 for TCP from 127.0.0.1: md5 in pg_hba.conf means
// "SCRAM for roles with a SCRAM secret, MD5 for roles with an MD5 hash"
// (client-auth.html, auth-password), so one cluster exercises both.
func startPGCluster() (*pgCluster, error) {
	for _, bin := range []string{"initdb", "pg_ctl", "postgres"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("PostgreSQL binary %s not found on PATH: %w", bin, err)
		}
	}
	dir, err := os.MkdirTemp("", "pgferry-auth-pg-")
	if err != nil {
		return nil, err
	}
	c := &pgCluster{dir: dir, sockDir: filepath.Join(dir, "sock")}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs a postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
	}
	if err := c.run("initdb", "-D", filepath.Join(dir, "data"), "-U", "postgres",
		"--auth-local=trust", "--auth-host=md5", "--no-sync", "-E", "UTF8"); err != nil {
		return nil, err
	}
	if err := c.run("mkdir", "-p", c.sockDir); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c.port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off", c.port, c.sockDir)
	if err := c.run("pg_ctl", "-D", filepath.Join(dir, "data"), "-o", opts, "-l",
		filepath.Join(dir, "log"), "-w", "-t", "60", "start"); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return c, nil
}

func (c *pgCluster) run(name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Dir = c.dir
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w\n%s", name, err, out)
	}
	return nil
}

func (c *pgCluster) stop() {
	_ = c.run("pg_ctl", "-D", filepath.Join(c.dir, "data"), "-m", "fast", "-w", "stop")
	os.RemoveAll(c.dir)
}

// addr is the cluster's TCP address.
func (c *pgCluster) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)) }

// exec runs SQL as the superuser over the Unix socket (trust).
func (c *pgCluster) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres", c.sockDir, c.port))
	if err != nil {
		t.Fatalf("connect as superuser: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("exec %q: %v", sql, err)
	}
}

// queryString runs a one-value query as the superuser.
func (c *pgCluster) queryString(t *testing.T, sql string, args ...any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres", c.sockDir, c.port))
	if err != nil {
		t.Fatalf("connect as superuser: %v", err)
	}
	defer conn.Close(ctx)
	var s string
	if err := conn.QueryRow(ctx, sql, args...).Scan(&s); err != nil {
		t.Fatalf("query %q: %v", sql, err)
	}
	return s
}

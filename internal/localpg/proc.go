package localpg

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// binDir is where Debian's postgresql-15 package installs the server
// programs; they are not on PATH there (only pg_wrapper'd clients are).
const binDir = "/usr/lib/postgresql/15/bin"

// Binary returns the full path of the PostgreSQL 15 program name: the one in
// /usr/lib/postgresql/15/bin if it exists, else the one found on PATH. If
// neither exists it returns the /usr/lib/postgresql/15/bin path anyway, so
// that running it fails with an error naming the expected location.
func Binary(name string) string {
	p := filepath.Join(binDir, name)
	if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
		return p
	}
	if lp, err := exec.LookPath(name); err == nil {
		return lp
	}
	return p
}

// requireBinaries reports every missing program at once.
func requireBinaries(names ...string) error {
	var missing []string
	for _, n := range names {
		p := Binary(n)
		if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("PostgreSQL 15 programs not found in %s or PATH: %s (install postgresql-15)",
			binDir, strings.Join(missing, ", "))
	}
	return nil
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago: it
// listens on port 0, reads the port the kernel chose and closes the listener.
// Another process can take the port before the caller binds it; callers that
// start a server on it retry with a new port when the bind fails (Start does).
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	return port, nil
}

// FreePorts returns n distinct free loopback ports: each listener stays
// open until all are chosen, so the kernel cannot hand one port out twice
// (FreePort called n times can).
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find free ports: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// osUser is the account that server programs run as when the test runs as
// root. A nil *osUser means "run as the current user".
type osUser struct {
	uid, gid uint32
}

// serverUser returns the postgres account when running as root, nil otherwise.
func serverUser() (*osUser, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs the postgres OS user to run PostgreSQL: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("postgres uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("postgres gid %q: %w", u.Gid, err)
	}
	return &osUser{uid: uint32(uid), gid: uint32(gid)}, nil
}

// chown gives path to u; a nil u does nothing.
func (u *osUser) chown(path string) error {
	if u == nil {
		return nil
	}
	if err := os.Lchown(path, int(u.uid), int(u.gid)); err != nil {
		return fmt.Errorf("chown %s to postgres: %w", path, err)
	}
	return nil
}

// mkdirTemp makes a private temporary directory owned by u.
func mkdirTemp(pattern string, u *osUser) (string, error) {
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", fmt.Errorf("make temp dir: %w", err)
	}
	if err := u.chown(dir); err != nil {
		_ = os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

// writeFile writes data to path with perm, owned by u. An existing file keeps
// its owner; its mode is set to perm.
func writeFile(path string, data []byte, perm os.FileMode, u *osUser) error {
	if err := os.WriteFile(path, data, perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(path, perm); err != nil {
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	return u.chown(path)
}

// runner runs PostgreSQL programs for one cluster.
type runner struct {
	as  *osUser // nil: run as the current user
	dir string  // working directory and HOME of the programs
}

// run runs the PostgreSQL program name and returns its combined output in the
// error when it fails. extraEnv entries are added to a scrubbed environment.
//
// The environment drops every PG* variable so that a developer's PGHOST,
// PGPORT, PGDATA or PGSSLMODE cannot redirect or change the programs, and HOME
// points at the cluster's base directory so libpq does not try to read root's
// ~/.pgpass as the postgres user.
func (r runner) run(ctx context.Context, extraEnv []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, Binary(name), args...)
	cmd.Dir = r.dir
	env := make([]string, 0, len(os.Environ())+len(extraEnv)+2)
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG=") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "HOME="+r.dir, "LC_ALL=C")
	cmd.Env = append(env, extraEnv...)
	if r.as != nil {
		// Groups is empty, so root's supplementary groups are dropped too.
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: r.as.uid, Gid: r.as.gid, Groups: []uint32{}},
		}
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	// pg_ctl start launches the postmaster with its output redirected to the
	// -l log file, so the postmaster does not hold these pipes open and Run
	// returns when pg_ctl exits.
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(redactArgs(args), " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// redactArgs hides connection strings (which may hold passwords) in error
// messages.
func redactArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.Contains(a, "password") {
			a = "[redacted]"
		}
		out[i] = a
	}
	return out
}

// FuzzWorker reports whether this test binary runs as a fuzzing worker
// (go test -fuzz starts the test binary again with -test.fuzzworker for each
// worker, and each run executes TestMain). A TestMain whose package has fuzz
// targets can skip starting a cluster in workers, which run only the fuzz
// function, so that fuzzing starts at once instead of after one initdb per
// worker. Call it after flag.Parse.
func FuzzWorker() bool {
	f := flag.Lookup("test.fuzzworker")
	if f == nil {
		return false
	}
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return false
	}
	v, ok := g.Get().(bool)
	return ok && v
}

package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/internal/pgtest"
)

const (
	pgbouncerPath = "/usr/sbin/pgbouncer" // Debian 12's PgBouncer 1.18
	// anchorPgbouncer is the newest PgBouncer, built beside the checkout
	// (relative to the module root); the default -pgbouncer adds it when
	// it exists.
	anchorPgbouncer = "../shared/anchors/pgbouncer/pgbouncer"
	poolerUser      = "postgres" // pgbouncer refuses to run as root
	readyTimeout    = 30 * time.Second
	stopTimeout     = 10 * time.Second
	// preparedStatements is max_prepared_statements in the ini of every
	// PgBouncer that knows the setting: pgferry's default, so the two sides
	// keep the same number of statements per server connection.
	preparedStatements = 200
)

// target is one place pgbench connects to.
type target struct {
	name    string // "direct", "pgferry", "pgbouncer 1.18", ...
	port    int
	direct  bool
	proc    *proc    // the pooler process; nil for direct
	bouncer *bouncer // nil unless the target is a PgBouncer
}

// fileName is a target's name as part of a file name: "pgbouncer-1.18".
func fileName(target string) string { return strings.ReplaceAll(target, " ", "-") }

// bouncer is one PgBouncer binary under test, with its own port, ini, log
// and process.
type bouncer struct {
	name     string // target name: "pgbouncer " and the version without a ".0" patch level
	version  string // as --version prints it: "1.18.0"
	path     string // absolute
	prepared bool   // the version knows max_prepared_statements (1.21 and later)
	port     int
	ini      string
	proc     *proc
}

// newBouncer asks the PgBouncer at path for its version.
func newBouncer(ctx context.Context, path string) (*bouncer, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("pgbouncer binary: %w", err)
	}
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --version: %w", path, err)
	}
	// The first line is "PgBouncer 1.18.0"; library versions follow.
	line, _, _ := strings.Cut(string(out), "\n")
	f := strings.Fields(line)
	var major, minor int
	if len(f) != 2 || f[0] != "PgBouncer" {
		return nil, fmt.Errorf("%s --version: unexpected first line %q", path, line)
	}
	if _, err := fmt.Sscanf(f[1], "%d.%d", &major, &minor); err != nil {
		return nil, fmt.Errorf("%s --version: version %q: %w", path, f[1], err)
	}
	short := f[1]
	if strings.Count(short, ".") == 2 {
		short = strings.TrimSuffix(short, ".0")
	}
	return &bouncer{
		name:     "pgbouncer " + short,
		version:  f[1],
		path:     path,
		prepared: major > 1 || major == 1 && minor >= 21,
	}, nil
}

// pgbouncerBinaries resolves -pgbouncer: the paths given, relative ones
// taken from the module root, each of which must exist; or, without any,
// Debian's PgBouncer and the anchor's when that one exists.
func pgbouncerBinaries(root string, given []string) []string {
	abs := func(p string) string {
		if filepath.IsAbs(p) {
			return filepath.Clean(p)
		}
		return filepath.Join(root, p)
	}
	if len(given) > 0 {
		out := make([]string, len(given))
		for i, p := range given {
			out[i] = abs(p)
		}
		return out
	}
	out := []string{pgbouncerPath}
	if _, err := os.Stat(abs(anchorPgbouncer)); err == nil {
		out = append(out, abs(anchorPgbouncer))
	}
	return out
}

// env is everything a run has started; close stops all of it.
type env struct {
	opts      options
	tmp       string
	pg        *pgtest.Cluster
	pgVersion string
	iniPath   string // the ini pgferry reads: the first PgBouncer's
	ferryBin  string
	// ferrySource says what pgferry was built from.
	ferrySource string
	ferryPort   int
	cred        *syscall.Credential // the postgres OS user
	ferry       *proc
	bouncers    []*bouncer // in -pgbouncer order
	secret      string     // SCRAM secret of app, as in userlist.txt
	serverTLS   serverTLS  // the certificate every pooler offers TLS clients
	clientTLS   *tls.Config
	notes       []string
	scram       *scramCache
	logins      map[string]time.Duration // loginTime cache
}

func (e *env) targets() []*target {
	ts := []*target{{name: "direct", port: e.pg.Port, direct: true}}
	return append(ts, e.poolers()...)
}

func (e *env) poolers() []*target {
	ts := []*target{{name: "pgferry", port: e.ferryPort, proc: e.ferry}}
	for _, b := range e.bouncers {
		ts = append(ts, &target{name: b.name, port: b.port, proc: b.proc, bouncer: b})
	}
	return ts
}

// bouncerNames are the PgBouncer targets' names, in -pgbouncer order.
func (e *env) bouncerNames() []string {
	var names []string
	for _, b := range e.bouncers {
		names = append(names, b.name)
	}
	return names
}

// close stops the poolers, then PostgreSQL, and removes the temp dir.
func (e *env) close() {
	if e == nil {
		return
	}
	e.ferry.stop()
	for _, b := range e.bouncers {
		b.proc.stop()
	}
	if e.pg != nil {
		logf("stopping PostgreSQL")
		e.pg.Stop()
	}
	if e.tmp != "" {
		if e.opts.keepTemp {
			logf("kept %s", e.tmp)
		} else {
			_ = os.RemoveAll(e.tmp)
		}
	}
}

// setup starts PostgreSQL, loads pgbench data, writes the shared ini and
// starts the poolers. The returned env is never nil and must be closed.
func setup(ctx context.Context, o options, root string) (*env, error) {
	e := &env{opts: o, scram: newSCRAMCache(), logins: map[string]time.Duration{}, clientTLS: clientTLS()}
	if _, err := os.Stat(pgtest.Binary("pgbench")); err != nil {
		return e, fmt.Errorf("pgbench not found: %w", err)
	}
	for _, path := range pgbouncerBinaries(root, o.bouncerBins) {
		b, err := newBouncer(ctx, path)
		if err != nil {
			return e, err
		}
		for _, other := range e.bouncers {
			if other.name == b.name {
				return e, fmt.Errorf("-pgbouncer: %s and %s are both PgBouncer %s", other.path, b.path, b.version)
			}
		}
		e.bouncers = append(e.bouncers, b)
	}
	u, err := user.Lookup(poolerUser)
	if err != nil {
		return e, fmt.Errorf("pgbouncer must run as %q: %w", poolerUser, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if os.Getuid() == 0 {
		e.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}

	tmp, err := os.MkdirTemp("", "ferrybench-*")
	if err != nil {
		return e, err
	}
	e.tmp = tmp
	if err := os.Chmod(tmp, 0o755); err != nil {
		return e, err
	}

	// Build pgferry first: a compile error should not cost a cluster start.
	if err := e.buildFerry(ctx, root); err != nil {
		return e, err
	}

	logf("starting PostgreSQL 15")
	e.pg, err = pgtest.Start(pgtest.Options{Conf: map[string]string{
		"max_connections":    "300",
		"shared_buffers":     "128MB",
		"fsync":              "off",
		"synchronous_commit": "off",
	}})
	if err != nil {
		return e, err
	}
	if err := ctx.Err(); err != nil {
		return e, err
	}
	if v, err := queryString(ctx, e.pg.SuperDSN("postgres"), "select current_setting('server_version')"); err == nil {
		e.pgVersion = v
	}

	logf("pgbench -i -s %d", o.scale)
	if out, err := pgbenchCmd(ctx, e.pg.Port, "-i", "-q", "-s", strconv.Itoa(o.scale)).CombinedOutput(); err != nil {
		return e, fmt.Errorf("pgbench -i: %v\n%s", err, out)
	}

	e.secret, err = queryString(ctx, e.pg.SuperDSN("postgres"), "select rolpassword from pg_authid where rolname = 'app'")
	if err != nil {
		return e, fmt.Errorf("read SCRAM secret of app: %w", err)
	}
	if !strings.HasPrefix(e.secret, "SCRAM-SHA-256$") {
		return e, fmt.Errorf("app's password is not a SCRAM secret: %.14q", e.secret)
	}
	userlist := filepath.Join(tmp, "userlist.txt")
	if err := os.WriteFile(userlist, fmt.Appendf(nil, "%q %q\n", pgtest.AppUser, e.secret), 0o600); err != nil {
		return e, err
	}

	// Every pooler offers TLS, for idle-tls and tls; PgBouncer runs as postgres
	// and must read the key, which is chowned below with the rest.
	if e.serverTLS, err = writeServerCert(tmp); err != nil {
		return e, err
	}

	// One port per pooler, all different.
	ports := map[int]bool{e.pg.Port: true}
	freePort := func() (int, error) {
		for {
			p, err := pgtest.FreePort()
			if err != nil || !ports[p] {
				ports[p] = true
				return p, err
			}
		}
	}
	if e.ferryPort, err = freePort(); err != nil {
		return e, err
	}
	owned := []string{tmp, userlist, e.serverTLS.certFile, e.serverTLS.keyFile}
	for _, b := range e.bouncers {
		if b.port, err = freePort(); err != nil {
			return e, err
		}
		b.ini = filepath.Join(tmp, fileName(b.name)+".ini")
		if err := os.WriteFile(b.ini, []byte(sharedINI(e.pg.Port, b.port, userlist, b.prepared, e.serverTLS)), 0o644); err != nil {
			return e, err
		}
		owned = append(owned, b.ini)
		if b.prepared {
			e.notes = append(e.notes, fmt.Sprintf("%s is PgBouncer %s (%s); its ini adds `max_prepared_statements = %d`.", b.name, b.version, b.path, preparedStatements))
		} else {
			e.notes = append(e.notes, fmt.Sprintf("%s is PgBouncer %s (%s); it predates `max_prepared_statements` (\"unknown parameter\", FATAL), so its ini leaves it out and it cannot serve `-M prepared` in transaction mode.", b.name, b.version, b.path))
		}
	}
	e.iniPath = e.bouncers[0].ini
	if e.cred != nil {
		for _, p := range owned {
			if err := os.Chown(p, uid, gid); err != nil {
				return e, err
			}
		}
	}
	e.notes = append(e.notes,
		fmt.Sprintf("Every pooler reads the same ini but for `listen_port` and `max_prepared_statements`: each PgBouncer its own copy, pgferry the copy of %s with its listen port overridden (PGFERRY_LISTEN_PORT), plus PGFERRY_LOG_LEVEL=warn%s%s; pgferry's max_prepared_statements is %d either way (its default).", e.bouncers[0].name, godebugNote(e.opts.godebug), ferryEnvNote(e.opts.ferryEnv), preparedStatements),
		"PgBouncer is single-threaded; pgferry uses both cores (GOMAXPROCS=2).",
		"Every ini sets `client_tls_sslmode = allow` with `client_tls_cert_file` and `client_tls_key_file` naming a throwaway self-signed ECDSA P-256 certificate (CN 127.0.0.1, SANs 127.0.0.1 and localhost) generated at start-up, its key file mode 0600 and owned by the user PgBouncer runs as (postgres): a client that sends SSLRequest gets TLS, every other client stays plain, so only idle-tls, tls and connect-tls use TLS. pgferry's relay_loop is on by default on at most two CPUs (docs/operations.md), unless -ferry-env sets PGFERRY_RELAY_LOOP; with it, the loop serves the TLS 1.3 clients of tls as it serves plain ones.",
	)

	if err := e.startPoolers(ctx); err != nil {
		return e, err
	}
	return e, nil
}

// buildFerry builds ./cmd/pgferry into the temp dir, from the working tree
// or, with -rev, from a git archive of that revision.
func (e *env) buildFerry(ctx context.Context, root string) error {
	src := root
	e.ferrySource = "working tree"
	if e.opts.rev != "" {
		src = filepath.Join(e.tmp, "src")
		if err := os.Mkdir(src, 0o755); err != nil {
			return err
		}
		out, err := exec.CommandContext(ctx, "sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`,
			"sh", root, e.opts.rev, src).CombinedOutput()
		if err != nil {
			return fmt.Errorf("git archive %s: %v\n%s", e.opts.rev, err, out)
		}
		rev, err := exec.CommandContext(ctx, "git", "-C", root, "rev-parse", "--short", e.opts.rev).Output()
		if err != nil {
			return fmt.Errorf("git rev-parse %s: %w", e.opts.rev, err)
		}
		e.ferrySource = "git " + strings.TrimSpace(string(rev))
	}
	logf("building pgferry (%s)", e.ferrySource)
	e.ferryBin = filepath.Join(e.tmp, "pgferry")
	build := exec.CommandContext(ctx, "go", "build", "-o", e.ferryBin, "./cmd/pgferry")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		hint := ""
		if e.opts.rev == "" {
			hint = " (to measure the last commit instead, add -rev HEAD)"
		}
		return fmt.Errorf("go build ./cmd/pgferry in the %s%s: %v\n%s", e.ferrySource, hint, err, out)
	}
	if src != root {
		_ = os.RemoveAll(src)
	}
	return nil
}

// sharedINI is the config file every pooler runs from; only the listen
// port and, for PgBouncer 1.21 and later, max_prepared_statements differ.
// Client TLS is "allow": clients that ask for TLS (idle-tls, tls) get it with
// the certificate in st, all others stay plain, so the other scenarios
// measure what they did before TLS was configured.
func sharedINI(pgPort, listenPort int, userlist string, prepared bool, st serverTLS) string {
	ini := fmt.Sprintf(`;; written by ferrybench; read by pgbouncer and pgferry
[databases]
app = host=127.0.0.1 port=%d dbname=app user=app password=app-secret

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = scram-sha-256
auth_file = %s
pool_mode = transaction
default_pool_size = 20
max_client_conn = 12000
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
client_tls_sslmode = allow
client_tls_key_file = %s
client_tls_cert_file = %s
`, pgPort, listenPort, userlist, st.keyFile, st.certFile)
	if prepared {
		ini += fmt.Sprintf("max_prepared_statements = %d\n", preparedStatements)
	}
	return ini
}

// startPoolers starts pgferry and every PgBouncer and waits until each
// accepts a SCRAM login.
func (e *env) startPoolers(ctx context.Context) error {
	var err error
	e.ferry, err = e.startFerry(ctx, nil)
	if err != nil {
		return err
	}
	for _, b := range e.bouncers {
		if b.proc, err = e.startBouncer(ctx, b, nil); err != nil {
			return err
		}
	}
	return nil
}

func (e *env) restartPoolers(ctx context.Context) error {
	logf("restarting the poolers")
	e.ferry.stop()
	e.ferry = nil
	for _, b := range e.bouncers {
		b.proc.stop()
		b.proc = nil
	}
	return e.startPoolers(ctx)
}

// godebugNote says which GODEBUG pgferry ran with, if -godebug set one.
func godebugNote(godebug string) string {
	if godebug == "" {
		return ""
	}
	return " and GODEBUG=" + godebug + " (-godebug)"
}

func ferryEnvNote(env []string) string {
	if len(env) == 0 {
		return ""
	}
	return " and " + strings.Join(env, ", ") + " (-ferry-env)"
}

// ferryGODEBUG joins -godebug and the settings a wrapper needs.
func ferryGODEBUG(set, extra string) string {
	switch {
	case set == "":
		return extra
	case extra == "":
		return set
	}
	return set + "," + extra
}

// startFerry starts pgferry on e.ferryPort, optionally under a wrapper
// command (valgrind), and waits until it accepts a login.
func (e *env) startFerry(ctx context.Context, wrapper []string) (*proc, error) {
	argv := append(append([]string{}, wrapper...), e.ferryBin, "-config", e.iniPath)
	env := []string{
		"PGFERRY_LISTEN_PORT=" + strconv.Itoa(e.ferryPort),
		"PGFERRY_LOG_LEVEL=warn",
	}
	env = append(env, e.opts.ferryEnv...)
	extra := ""
	if len(wrapper) > 0 {
		// Callgrind cannot take the SIGURG preemption signals.
		// valgrind 3.19 does not decode RDTSCP, which the Go runtime uses
		// (cputicks, on a contended runtime lock) when CPUID reports it, as
		// valgrind does on AMD hosts: the pooler died with SIGILL.
		extra = "asyncpreemptoff=1,cpu.rdtscp=off"
	}
	if godebug := ferryGODEBUG(e.opts.godebug, extra); godebug != "" {
		env = append(env, "GODEBUG="+godebug)
	}
	p, err := startProc("pgferry", argv, env, nil, filepath.Join(e.tmp, "pgferry.log"))
	if err != nil {
		return nil, err
	}
	return p, e.waitReady(ctx, p, e.ferryPort, len(wrapper) > 0)
}

// startBouncer starts b as the postgres OS user on its port, optionally
// under a wrapper command (valgrind), and waits until it accepts a login.
func (e *env) startBouncer(ctx context.Context, b *bouncer, wrapper []string) (*proc, error) {
	argv := append(append([]string{}, wrapper...), b.path, b.ini)
	// valgrind names its vgdb FIFOs after $USER: make it the real user.
	env := []string{"USER=" + poolerUser, "LOGNAME=" + poolerUser}
	log := filepath.Join(e.tmp, fileName(b.name)+".log")
	p, err := startProc(b.name, argv, env, e.cred, log)
	if err != nil {
		return nil, err
	}
	return p, e.waitReady(ctx, p, b.port, len(wrapper) > 0)
}

func (e *env) waitReady(ctx context.Context, p *proc, port int, slow bool) error {
	timeout := readyTimeout
	if slow {
		timeout = 4 * readyTimeout
	}
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if err := ctx.Err(); err != nil {
			p.stop()
			return err
		}
		if p.exited() {
			p.stop()
			return fmt.Errorf("%s exited during start-up:\n%s", p.name, p.logTail(20))
		}
		c, err := e.login(ctx, port, 5*time.Second)
		if err == nil {
			_ = c.Close()
			logf("%s ready on port %d (pid %d)", p.name, port, p.pid())
			return nil
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	p.stop()
	return fmt.Errorf("%s not ready after %s: %v\n%s", p.name, timeout, last, p.logTail(20))
}

// login opens a plain client connection as app with a full SCRAM login and
// waits for ReadyForQuery.
func (e *env) login(ctx context.Context, port int, timeout time.Duration) (net.Conn, error) {
	return scramLogin(ctx, e.scram, fmt.Sprintf("127.0.0.1:%d", port), pgtest.AppUser, pgtest.AppPassword, pgtest.AppDatabase, timeout, nil)
}

// loginTLS is login over TLS: SSLRequest and a TLS 1.3 handshake first,
// then the same SCRAM login; the connection returned is the *tls.Conn.
func (e *env) loginTLS(ctx context.Context, port int, timeout time.Duration) (net.Conn, error) {
	return scramLogin(ctx, e.scram, fmt.Sprintf("127.0.0.1:%d", port), pgtest.AppUser, pgtest.AppPassword, pgtest.AppDatabase, timeout, e.clientTLS)
}

// dsn is a pgx/libpq connection string for app at port.
func dsn(port int) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d dbname=%s user=%s password=%s sslmode=disable",
		port, pgtest.AppDatabase, pgtest.AppUser, pgtest.AppPassword)
}

func queryString(ctx context.Context, connStr, sql string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, connStr)
	if err != nil {
		return "", err
	}
	defer c.Close(context.Background())
	var s string
	err = c.QueryRow(ctx, sql).Scan(&s)
	return s, err
}

// pgbenchCmd is pgbench connecting as app to 127.0.0.1:port.
func pgbenchCmd(ctx context.Context, port int, args ...string) *exec.Cmd {
	all := append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", pgtest.AppUser}, args...)
	all = append(all, pgtest.AppDatabase)
	cmd := exec.CommandContext(ctx, pgtest.Binary("pgbench"), all...)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+pgtest.AppPassword, "PGSSLMODE=disable")
	// Own process group: a terminal Ctrl-C reaches ferrybench, which then
	// kills pgbench through ctx.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// proc is a long-running child (a pooler).
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	logFile *os.File
	done    chan struct{}
	err     error
}

func startProc(name string, argv, extraEnv []string, cred *syscall.Credential, logPath string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	if cred != nil {
		_ = f.Chown(int(cred.Uid), int(cred.Gid))
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), extraEnv...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = filepath.Dir(logPath)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, logFile: f, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM (pgferry: graceful shutdown; pgbouncer: immediate
// shutdown), then SIGKILL after stopTimeout. Safe on nil and repeatable.
func (p *proc) stop() {
	p.stopWithin(stopTimeout)
}

func (p *proc) stopWithin(timeout time.Duration) {
	if p == nil {
		return
	}
	if !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(timeout):
			logf("%s did not stop within %s; killing it", p.name, timeout)
			_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
			<-p.done
		}
	}
	p.logFile.Close()
}

// kill ends the process group with SIGKILL and waits. Safe on nil.
func (p *proc) kill() {
	if p == nil {
		return
	}
	if !p.exited() {
		_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
		<-p.done
	}
	p.logFile.Close()
}

func (p *proc) logTail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// cpuTicks is utime+stime of pid from /proc/<pid>/stat, in clock ticks.
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields after ")" are fixed.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return ut + st, nil
}

// rssBytes is VmRSS of pid.
func rssBytes(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) < 1 {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// clkTck is the kernel's USER_HZ (getconf CLK_TCK); 100 on Linux.
var clkTck = func() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && v > 0 {
			return float64(v)
		}
	}
	return 100
}()

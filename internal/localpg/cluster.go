package localpg

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	// startTimeout bounds Start and StartReplica as a whole: initdb or
	// pg_basebackup, pg_ctl start and the wait for a connection. Many test
	// binaries start clusters at once under `go test ./...` on a 2-core
	// machine, so this is generous.
	startTimeout = 3 * time.Minute
	// pgCtlWait is pg_ctl's own -t for start, stop and promote.
	pgCtlWait = "90"
	// portAttempts is how many free ports Start tries when another process
	// takes the chosen port between FreePort and the postmaster's bind.
	portAttempts = 10

	// AppUser, AppPassword and AppDatabase are created by Start: a LOGIN role
	// with a SCRAM-SHA-256 password and a database it owns.
	AppUser     = "app"
	AppPassword = "app-secret"
	AppDatabase = "app"
)

// errPortInUse marks a start that failed because the port was taken.
var errPortInUse = errors.New("port already in use")

// Options configures a cluster made by Start or Cluster.StartReplica.
type Options struct {
	// TLS generates a self-signed CA and a server certificate for
	// "localhost", 127.0.0.1 and ::1 signed by it, and turns ssl on. Clients
	// may still connect without TLS (pg_hba.conf uses "host" lines).
	TLS bool
	// HBA lines are placed in pg_hba.conf before the defaults, so they win.
	HBA []string
	// Conf holds extra postgresql.conf settings, written after the defaults
	// so they override them. Values are quoted as strings, which PostgreSQL
	// accepts for settings of every type ('on', '100', '10s').
	Conf map[string]string
	// Replication sets wal_level=replica, max_wal_senders, hot_standby and
	// adds replication lines to pg_hba.conf (local trust, 127.0.0.1 SCRAM).
	// A primary needs it for StartReplica.
	Replication bool
	// FromTemplate makes Start copy a data directory initdb made once
	// (kept in the temp directory for every later run: see template.go)
	// instead of running initdb, which costs three times the CPU. Tests
	// start dozens of clusters; the demo starts one and leaves nothing.
	FromTemplate bool
}

// Cluster is a running (or stopped) throwaway PostgreSQL cluster.
//
// Exec, QueryInt, CreateDatabase, CreateRole, AddHBA, DSN, SuperDSN and
// LogTail are safe for concurrent use. The lifecycle methods (Stop,
// StopImmediate, Restart, Promote, StartReplica) must not run concurrently
// with each other on the same Cluster; Stop may be called any number of times.
// The exported fields are set by Start and must not be modified.
type Cluster struct {
	Host      string // always "127.0.0.1"
	Port      int    // TCP port on Host; the unix socket uses the same number
	DataDir   string
	SocketDir string // unix_socket_directories; use as host= for socket connections

	// CAFile is the PEM certificate of the CA that signed CertFile; set only
	// with Options.TLS.
	CAFile string
	// CertFile and KeyFile are the server's certificate and key (PEM) for
	// "localhost", 127.0.0.1 and ::1, signed by CAFile. Tests may reuse them as
	// pgferry's client-facing certificate. Set only with Options.TLS.
	CertFile, KeyFile string

	SuperUser     string // "postgres"
	SuperPassword string // random per primary; a replica shares its primary's

	opts    Options
	baseDir string   // holds data/, tls/, the log; removed by Stop
	dirs    []string // every directory Stop removes (baseDir, maybe a socket dir)
	logFile string
	owner   *osUser // server programs run as this user; nil if not root
	run     runner

	// hbaMu serialises the read-modify-write of pg_hba.conf in AddHBA. It is
	// held across file I/O and a reload on purpose: two AddHBA calls must not
	// interleave, and this is test-only code where simplicity beats latency.
	hbaMu sync.Mutex

	// mu guards the fields below; it is never held across I/O.
	mu       sync.Mutex
	removed  bool       // Stop has begun; the directories are gone or going
	replicas []*Cluster // started by StartReplica; stopped by Stop
}

// Start initialises and starts a new cluster and blocks until it accepts a
// SCRAM-authenticated TCP connection as the superuser. It also creates the
// role AppUser (password AppPassword) and the database AppDatabase it owns.
//
// Start is meant for TestMain: the caller owns the cluster and must call Stop.
// On error nothing is left running and the temporary directories are removed.
// A missing PostgreSQL binary is an error.
func Start(opts Options) (*Cluster, error) {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()

	if err := requireBinaries("initdb", "pg_ctl", "postgres"); err != nil {
		return nil, err
	}
	password, err := randomHex(16)
	if err != nil {
		return nil, err
	}
	c, err := newCluster(opts, password)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			c.Stop()
		}
	}()

	if opts.FromTemplate {
		if err := c.copyTemplate(ctx); err != nil {
			return nil, err
		}
		c.SuperPassword = templatePassword
	} else if err := c.initdb(ctx, password); err != nil {
		return nil, err
	}
	if err := c.configure(nil); err != nil {
		return nil, fmt.Errorf("localpg: %w", err)
	}
	if err := c.startOnFreePort(ctx); err != nil {
		return nil, fmt.Errorf("localpg: %w", err)
	}
	if opts.FromTemplate {
		// The copy's superuser has the template's password: this
		// cluster's own replaces it before anyone else learns the port.
		if err := c.runWithPassword(ctx, "set the superuser's password", "ALTER ROLE "+quoteIdent(c.SuperUser)+" PASSWORD "+quoteLiteral(password)); err != nil {
			return nil, fmt.Errorf("localpg: %w", err)
		}
		c.SuperPassword = password
	}
	if err := c.CreateRole(ctx, AppUser, AppPassword); err != nil {
		return nil, fmt.Errorf("localpg: %w", err)
	}
	if err := c.Exec(ctx, "CREATE DATABASE "+quoteIdent(AppDatabase)+" OWNER "+quoteIdent(AppUser)); err != nil {
		return nil, fmt.Errorf("localpg: %w", err)
	}
	ok = true
	return c, nil
}

// initdb makes c's data directory, the superuser's password password.
func (c *Cluster) initdb(ctx context.Context, password string) error {
	pwfile := filepath.Join(c.baseDir, "pwfile")
	if err := writeFile(pwfile, []byte(password+"\n"), 0o600, c.owner); err != nil {
		return err
	}
	args := append([]string{"-D", c.DataDir, "--pwfile", pwfile}, initdbArgs...)
	if _, err := c.run.run(ctx, nil, "initdb", args...); err != nil {
		return fmt.Errorf("localpg: %w", err)
	}
	if err := os.Remove(pwfile); err != nil {
		return fmt.Errorf("localpg: remove pwfile: %w", err)
	}
	return nil
}

// newCluster makes the temporary directories of a cluster that is not yet
// initialised.
func newCluster(opts Options, superPassword string) (*Cluster, error) {
	owner, err := serverUser()
	if err != nil {
		return nil, fmt.Errorf("localpg: %w", err)
	}
	base, err := mkdirTemp("pgtest-*", owner)
	if err != nil {
		return nil, fmt.Errorf("localpg: %w", err)
	}
	c := &Cluster{
		Host:          "127.0.0.1",
		DataDir:       filepath.Join(base, "data"),
		SocketDir:     filepath.Join(base, "sock"),
		SuperUser:     "postgres",
		SuperPassword: superPassword,
		opts:          opts,
		baseDir:       base,
		dirs:          []string{base},
		logFile:       filepath.Join(base, "postgres.log"),
		owner:         owner,
		run:           runner{as: owner, dir: base},
	}
	// A unix socket path is limited to 107 bytes (sun_path); with a long
	// TMPDIR fall back to a short directory under /tmp.
	if len(c.SocketDir)+len("/.s.PGSQL.65535") > 100 {
		sock, err := os.MkdirTemp("/tmp", "pgsock-*")
		if err != nil {
			_ = os.RemoveAll(base)
			return nil, fmt.Errorf("localpg: make socket dir: %w", err)
		}
		c.SocketDir = sock
		c.dirs = append(c.dirs, sock)
	} else if err := os.Mkdir(c.SocketDir, 0o700); err != nil {
		_ = os.RemoveAll(base)
		return nil, fmt.Errorf("localpg: make socket dir: %w", err)
	}
	if err := owner.chown(c.SocketDir); err != nil {
		c.removeDirs()
		return nil, fmt.Errorf("localpg: %w", err)
	}
	return c, nil
}

// configure writes pg_hba.conf, the TLS files and the include of pgtest.conf
// into an initialised (or base-backed-up) data directory. primaryConf, for a
// replica, is its primary's Options.Conf, applied before its own.
func (c *Cluster) configure(primaryConf map[string]string) error {
	if c.opts.TLS {
		dir := filepath.Join(c.baseDir, "tls")
		if err := os.Mkdir(dir, 0o755); err != nil {
			return fmt.Errorf("make tls dir: %w", err)
		}
		if err := c.owner.chown(dir); err != nil {
			return err
		}
		files, err := writeTLSFiles(dir, c.owner)
		if err != nil {
			return err
		}
		c.CAFile, c.CertFile, c.KeyFile = files.caFile, files.certFile, files.keyFile
	}
	if err := writeFile(c.hbaPath(), []byte(hbaFile(c.opts)), 0o600, c.owner); err != nil {
		return err
	}
	if len(primaryConf) > 0 {
		conf := maps.Clone(primaryConf)
		maps.Copy(conf, c.opts.Conf)
		c.opts.Conf = conf
	}
	// A replica's postgresql.conf comes from its primary and already has the
	// include line.
	mainConf := filepath.Join(c.DataDir, "postgresql.conf")
	b, err := os.ReadFile(mainConf)
	if err != nil {
		return fmt.Errorf("read postgresql.conf: %w", err)
	}
	const include = "\ninclude 'pgtest.conf'\n"
	if !strings.Contains(string(b), include) {
		if err := writeFile(mainConf, append(b, include...), 0o600, c.owner); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) hbaPath() string { return filepath.Join(c.DataDir, "pg_hba.conf") }

// hbaFile is the whole pg_hba.conf for opts. Local connections are trusted so
// that the harness can always administer the cluster over its private socket
// (Exec and friends), whatever host lines a test adds.
func hbaFile(opts Options) string {
	var b strings.Builder
	b.WriteString("# Written by pgferry internal/localpg.\n")
	if len(opts.HBA) > 0 {
		b.WriteString("# Options.HBA\n")
		for _, l := range opts.HBA {
			b.WriteString(l + "\n")
		}
	}
	b.WriteString("# defaults\n")
	b.WriteString("local all all trust\n")
	b.WriteString("host all all 127.0.0.1/32 scram-sha-256\n")
	b.WriteString("host all all ::1/128 scram-sha-256\n")
	if opts.Replication {
		b.WriteString("local replication all trust\n")
		b.WriteString("host replication all 127.0.0.1/32 scram-sha-256\n")
	}
	return b.String()
}

// writeConf writes pgtest.conf, included at the end of postgresql.conf, for
// the current port.
func (c *Cluster) writeConf() error {
	type kv struct{ k, v string }
	settings := []kv{
		{"listen_addresses", "127.0.0.1"},
		{"port", strconv.Itoa(c.Port)},
		{"unix_socket_directories", c.SocketDir},
		{"max_connections", "300"},
		{"shared_buffers", "32MB"},
		{"fsync", "off"},
		{"full_page_writes", "off"},
		{"password_encryption", "scram-sha-256"},
		{"log_destination", "stderr"},
		{"logging_collector", "off"},
		{"log_line_prefix", "%m [%p] %q%u@%d "},
		{"hot_standby", "on"},
	}
	if c.opts.TLS {
		settings = append(settings,
			kv{"ssl", "on"},
			kv{"ssl_cert_file", c.CertFile},
			kv{"ssl_key_file", c.KeyFile},
			kv{"ssl_ca_file", c.CAFile},
		)
	} else {
		settings = append(settings, kv{"ssl", "off"})
	}
	if c.opts.Replication {
		settings = append(settings,
			kv{"wal_level", "replica"},
			kv{"max_wal_senders", "10"},
			kv{"max_replication_slots", "10"},
			kv{"wal_keep_size", "128MB"},
		)
	}
	for _, k := range slices.Sorted(maps.Keys(c.opts.Conf)) {
		settings = append(settings, kv{k, c.opts.Conf[k]})
	}
	var b strings.Builder
	b.WriteString("# Written by pgferry internal/localpg; later lines win.\n")
	for _, s := range settings {
		fmt.Fprintf(&b, "%s = '%s'\n", s.k, strings.ReplaceAll(s.v, "'", "''"))
	}
	return writeFile(filepath.Join(c.DataDir, "pgtest.conf"), []byte(b.String()), 0o600, c.owner)
}

// startOnFreePort starts the server on a free port, trying another one when
// the chosen port was taken in the meantime, and waits until it accepts TCP
// connections.
func (c *Cluster) startOnFreePort(ctx context.Context) error {
	var err error
	for range portAttempts {
		if c.Port, err = FreePort(); err != nil {
			return err
		}
		if err = c.writeConf(); err != nil {
			return err
		}
		if err = c.pgCtlStart(ctx); err == nil {
			return c.waitReady(ctx)
		}
		if !errors.Is(err, errPortInUse) {
			return err
		}
	}
	return err
}

// pgCtlStart runs pg_ctl start -w. If it fails, it makes sure no postmaster
// is left behind and returns the new part of the server log in the error.
func (c *Cluster) pgCtlStart(ctx context.Context) error {
	var offset int64
	if fi, err := os.Stat(c.logFile); err == nil {
		offset = fi.Size()
	}
	_, err := c.run.run(ctx, nil, "pg_ctl", "start", "-w", "-t", pgCtlWait, "-D", c.DataDir, "-l", c.logFile)
	if err == nil {
		return nil
	}
	// pg_ctl -w may give up (timeout, canceled context) while the postmaster
	// is still coming up; leave nothing running.
	c.stopServer("immediate")
	newLog := readFrom(c.logFile, offset)
	if strings.Contains(newLog, "could not bind") || strings.Contains(newLog, "Address already in use") {
		return fmt.Errorf("start on port %d: %w", c.Port, errPortInUse)
	}
	return fmt.Errorf("%w\nserver log:\n%s", err, lastLines(newLog, 30))
}

// waitReady polls until a SCRAM-authenticated TCP connection as the superuser
// succeeds, or ctx ends.
func (c *Cluster) waitReady(ctx context.Context) error {
	dsn := c.SuperDSN("postgres")
	var lastErr error
	for {
		attemptCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := pgx.Connect(attemptCtx, dsn)
		if err == nil {
			err = conn.Ping(attemptCtx)
			_ = conn.Close(attemptCtx)
		}
		cancel()
		if err == nil {
			return nil
		}
		lastErr = err
		if err := waitOrDone(ctx, 50*time.Millisecond); err != nil {
			return fmt.Errorf("server on port %d not accepting connections: %w (last error: %v)\nserver log:\n%s",
				c.Port, err, lastErr, c.LogTail(30))
		}
	}
}

// waitOrDone waits for d, or returns ctx's error if it ends first.
func waitOrDone(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// isRunning reports whether a postmaster owns the data directory.
func (c *Cluster) isRunning() bool {
	_, err := os.Stat(filepath.Join(c.DataDir, "postmaster.pid"))
	return err == nil
}

// stopServer runs pg_ctl stop with the given mode if a postmaster is running,
// falling back to immediate mode if that fails.
func (c *Cluster) stopServer(mode string) error {
	if !c.isRunning() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := c.run.run(ctx, nil, "pg_ctl", "stop", "-w", "-t", pgCtlWait, "-m", mode, "-D", c.DataDir)
	if err != nil && mode != "immediate" && c.isRunning() {
		if _, err2 := c.run.run(ctx, nil, "pg_ctl", "stop", "-w", "-t", pgCtlWait, "-m", "immediate", "-D", c.DataDir); err2 == nil {
			return nil
		}
	}
	if err != nil && !c.isRunning() {
		return nil
	}
	return err
}

// Stop stops the server (pg_ctl stop -m fast, falling back to immediate),
// first stopping every replica started from it with StartReplica, and removes
// all of the cluster's temporary directories. It blocks until done, is
// idempotent, and reports problems on stderr since there is nobody to return
// them to in a TestMain cleanup.
func (c *Cluster) Stop() {
	c.mu.Lock()
	if c.removed {
		c.mu.Unlock()
		return
	}
	c.removed = true
	replicas := c.replicas
	c.replicas = nil
	c.mu.Unlock()

	for _, r := range replicas {
		r.Stop()
	}
	if err := c.stopServer("fast"); err != nil {
		fmt.Fprintf(os.Stderr, "localpg: stop cluster on port %d: %v\n", c.Port, err)
	}
	c.removeDirs()
}

func (c *Cluster) removeDirs() {
	for _, d := range c.dirs {
		if err := os.RemoveAll(d); err != nil {
			fmt.Fprintf(os.Stderr, "localpg: %v\n", err)
		}
	}
}

// StopImmediate stops the server with pg_ctl stop -m immediate, as a crash
// would: clients see their connections cut without a goodbye and the next
// start runs crash recovery. The data directory is kept; Restart brings the
// server back on the same port. It blocks until the postmaster has exited.
func (c *Cluster) StopImmediate() error {
	if err := c.checkNotRemoved(); err != nil {
		return err
	}
	if err := c.stopServer("immediate"); err != nil {
		return fmt.Errorf("localpg: %w", err)
	}
	return nil
}

// Restart starts the server again on the same port after StopImmediate (a
// running server is first stopped with -m fast), and blocks until it accepts
// connections. It fails if the port was taken in the meantime, or after Stop.
func (c *Cluster) Restart() error {
	if err := c.checkNotRemoved(); err != nil {
		return err
	}
	if err := c.stopServer("fast"); err != nil {
		return fmt.Errorf("localpg: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := c.pgCtlStart(ctx); err != nil {
		return fmt.Errorf("localpg: restart: %w", err)
	}
	if err := c.waitReady(ctx); err != nil {
		return fmt.Errorf("localpg: restart: %w", err)
	}
	return nil
}

// Promote promotes a replica to primary with pg_ctl promote -w, and blocks
// until pg_is_in_recovery() is false.
func (c *Cluster) Promote() error {
	if err := c.checkNotRemoved(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if _, err := c.run.run(ctx, nil, "pg_ctl", "promote", "-w", "-t", pgCtlWait, "-D", c.DataDir); err != nil {
		return fmt.Errorf("localpg: %w", err)
	}
	return c.poll(ctx, "promotion", func(ctx context.Context) (bool, error) {
		n, err := c.QueryInt(ctx, "SELECT pg_is_in_recovery()::int")
		return n == 0, err
	})
}

// StartReplica makes a streaming replica of c with pg_basebackup -R -X stream
// into new temporary directories, starts it on a new free port and blocks
// until it is in recovery and its WAL receiver is streaming. The primary must
// have been started with Options.Replication.
//
// opts applies to the replica: its own TLS material, HBA lines and Conf (the
// primary's Conf is applied first, since a hot standby needs settings such as
// max_connections at least as high as its primary's). The replica shares the
// primary's superuser password and roles. The caller owns the replica and
// should Stop it; c.Stop also stops it.
func (c *Cluster) StartReplica(opts Options) (*Cluster, error) {
	if err := c.checkNotRemoved(); err != nil {
		return nil, err
	}
	if !c.opts.Replication {
		return nil, errors.New("localpg: StartReplica needs a primary started with Options.Replication")
	}
	if err := requireBinaries("pg_basebackup", "pg_ctl", "postgres"); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()

	r, err := newCluster(opts, c.SuperPassword)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			r.Stop()
		}
	}()
	// The password goes through the environment, not argv; -R writes it into
	// the replica's primary_conninfo so the replica can reconnect after a
	// primary restart.
	if _, err := r.run.run(ctx, []string{"PGPASSWORD=" + c.SuperPassword}, "pg_basebackup",
		"-D", r.DataDir,
		"-R", "-X", "stream", "-c", "fast", "--no-sync", "-w",
		"-h", c.Host, "-p", strconv.Itoa(c.Port), "-U", c.SuperUser,
	); err != nil {
		return nil, fmt.Errorf("localpg: %w", err)
	}
	if err := r.configure(c.opts.Conf); err != nil {
		return nil, fmt.Errorf("localpg: %w", err)
	}
	if err := r.startOnFreePort(ctx); err != nil {
		return nil, fmt.Errorf("localpg: replica: %w", err)
	}
	err = r.poll(ctx, "replica streaming", func(ctx context.Context) (bool, error) {
		n, err := r.QueryInt(ctx, "SELECT (pg_is_in_recovery() AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming'))::int")
		return n == 1, err
	})
	if err != nil {
		return nil, err
	}

	c.mu.Lock()
	removed := c.removed
	if !removed {
		c.replicas = append(c.replicas, r)
	}
	c.mu.Unlock()
	if removed {
		return nil, errors.New("localpg: primary stopped while the replica started")
	}
	ok = true
	return r, nil
}

// poll runs cond every 50ms until it returns true or ctx ends; errors from
// cond are retried and reported if the deadline passes.
func (c *Cluster) poll(ctx context.Context, what string, cond func(context.Context) (bool, error)) error {
	var lastErr error
	for {
		done, err := cond(ctx)
		if err == nil && done {
			return nil
		}
		if err != nil {
			lastErr = err
		}
		if err := waitOrDone(ctx, 50*time.Millisecond); err != nil {
			return fmt.Errorf("localpg: waiting for %s on port %d: %w (last error: %v)\nserver log:\n%s",
				what, c.Port, err, lastErr, c.LogTail(30))
		}
	}
}

func (c *Cluster) checkNotRemoved() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed {
		return errors.New("localpg: cluster already stopped and removed")
	}
	return nil
}

// LogTail returns the last n lines of the server log, for test failure
// messages. It returns "" if the log cannot be read.
func (c *Cluster) LogTail(n int) string {
	const maxRead = 256 << 10
	var offset int64
	if fi, err := os.Stat(c.logFile); err == nil && fi.Size() > maxRead {
		offset = fi.Size() - maxRead
	}
	return lastLines(readFrom(c.logFile, offset), n)
}

// readFrom returns the contents of path from offset on, or "" on error.
func readFrom(path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return ""
	}
	return string(b)
}

func lastLines(s string, n int) string {
	if n <= 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("localpg: random: %w", err)
	}
	return hex.EncodeToString(b), nil
}

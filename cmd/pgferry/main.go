// Command pgferry is a PostgreSQL connection pooler: it reads a TOML config
// (or a PgBouncer ini file), listens for clients and pools their
// transactions onto a small set of server connections.
//
// Usage:
//
//	pgferry -config configs/pgferry.toml   run
//	pgferry -config pgbouncer.ini          run from a PgBouncer config
//	pgferry -check-config -config FILE     validate and exit
//	pgferry -convert pgbouncer.ini         print the equivalent TOML
//	pgferry                                demo: start a throwaway PostgreSQL
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	_ "net/http/pprof" // served only on debug_listen
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/pgferry/pgferry/auth/entra"
	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/watch"
	"github.com/pgferry/pgferry/metrics"
	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/router"
)

// Exit codes: 0 after a clean shutdown, 1 on errors, 2 on bad usage or an
// invalid config, 130/143 when a second SIGINT/SIGTERM forces an exit.
const (
	exitError  = 1
	exitConfig = 2
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("pgferry", flag.ContinueOnError)
	configPath := fs.String("config", os.Getenv("PGFERRY_CONFIG"), "config file: TOML, or a PgBouncer .ini")
	check := fs.Bool("check-config", false, "validate the config and exit")
	convert := fs.String("convert", "", "print the TOML equivalent of a PgBouncer ini file and exit")
	demoPort := fs.Int("demo-port", 6432, "listen port in demo mode (no -config)")
	strict := fs.Bool("strict", false, "with -check-config: fail, listing them, when the config has keys pgferry would ignore")
	showVersion := fs.Bool("version", false, "print pgferry's version and exit")
	if err := fs.Parse(args); err != nil {
		return exitConfig
	}
	if *showVersion {
		fmt.Printf("pgferry %s (%s)\n", router.Version(), runtime.Version())
		return 0
	}
	if *convert != "" {
		cfg, warnings, err := configs.Load(*convert)
		for _, w := range warnings {
			fmt.Fprintln(os.Stderr, "warning:", w)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "pgferry:", err)
			return exitConfig
		}
		out, err := cfg.ToTOML()
		if err != nil {
			fmt.Fprintln(os.Stderr, "pgferry:", err)
			return exitError
		}
		os.Stdout.Write(out)
		return 0
	}
	if *configPath == "" {
		if *check {
			fmt.Fprintln(os.Stderr, "pgferry: -check-config needs -config")
			return exitConfig
		}
		return runDemo(*demoPort)
	}
	cfg, warnings, err := configs.Load(*configPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgferry: invalid config %s:\n%v\n", *configPath, err)
		return exitConfig
	}
	if *check {
		for _, w := range warnings {
			fmt.Fprintln(os.Stderr, "warning:", w)
		}
		if *strict && len(warnings) > 0 {
			fmt.Fprintf(os.Stderr, "pgferry: %s: %d setting(s) would be ignored (-strict)\n", *configPath, len(warnings))
			return exitConfig
		}
		fmt.Printf("%s: OK\n", *configPath)
		return 0
	}
	log, level, err := newLogger(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgferry:", err)
		return exitConfig
	}
	defer log.Sync()
	for _, w := range warnings {
		log.Warn("config warning", zap.String("warning", w))
	}
	return serve(cfg, *configPath, log, level)
}

// heapProfileRate is the runtime.MemProfileRate for a pgferry whose
// debug_listen is debugListen, the rate being rate now: the heap profile
// is sampled only where debug_listen serves it (pprof). Elsewhere its
// samples, and the call stacks they keep, are memory nobody reads: some
// 500 B per client at 1,000 idle TLS clients, after the burst of
// handshakes that logged them in. A memprofilerate in GODEBUG wins.
func heapProfileRate(debugListen, godebug string, rate int) int {
	if debugListen != "" || strings.Contains(godebug, "memprofilerate=") {
		return rate
	}
	return 0
}

func newLogger(cfg *configs.Config) (*zap.Logger, zap.AtomicLevel, error) {
	level, err := zap.ParseAtomicLevel(cfg.LogLevel)
	if err != nil {
		return nil, level, fmt.Errorf("log_level: %w", err)
	}
	var zc zap.Config
	if cfg.LogFormat == "console" {
		zc = zap.NewDevelopmentConfig()
		zc.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
	} else {
		zc = zap.NewProductionConfig()
		zc.EncoderConfig.TimeKey = "ts"
		zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	}
	zc.Level = level
	zc.DisableStacktrace = true
	zc.Sampling = nil
	l, err := zc.Build()
	return l, level, err
}

// serve runs pgferry until SIGINT/SIGTERM. SIGHUP reloads the config.
func serve(cfg *configs.Config, path string, log *zap.Logger, level zap.AtomicLevel) int {
	runtime.MemProfileRate = heapProfileRate(cfg.DebugListen, os.Getenv("GODEBUG"), runtime.MemProfileRate)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	sources := newTokenSources(ctx, log)
	defer sources.close()

	reg := prometheus.NewRegistry()
	m := metrics.New(reg, nil, router.Version())
	sources.metrics = m
	srv, err := router.New(cfg, router.Options{Logger: log, PasswordSource: sources.get, Hooks: m.Hooks()})
	if err != nil {
		log.Error("cannot start", zap.Error(err))
		return exitConfig
	}
	m.SetServer(srv)
	var ready atomic.Bool
	if cfg.MetricsListen != "" {
		// With so_reuseport, a replacement process shares this port too.
		ln, err := router.ListenConfig(cfg.SoReuseport).Listen(context.Background(), "tcp", cfg.MetricsListen)
		if err != nil {
			log.Error("cannot listen for metrics", zap.String("metrics_listen", cfg.MetricsListen), zap.Error(err))
			return exitError
		}
		hs := &http.Server{Handler: metrics.Handler(reg, ready.Load), ReadHeaderTimeout: 5 * time.Second}
		go hs.Serve(ln)
		defer hs.Close()
		log.Info("metrics listening", zap.String("addr", ln.Addr().String()))
	}
	if err := srv.Listen(); err != nil {
		log.Error("cannot listen", zap.Error(err))
		return exitError
	}
	if err := srv.Serve(); err != nil {
		log.Error("cannot serve", zap.Error(err))
		return exitError
	}
	if cfg.DebugListen != "" {
		ln, err := router.ListenConfig(cfg.SoReuseport).Listen(context.Background(), "tcp", cfg.DebugListen)
		if err != nil {
			log.Error("cannot listen for pprof", zap.String("debug_listen", cfg.DebugListen), zap.Error(err))
			return exitError
		}
		ds := &http.Server{Handler: http.DefaultServeMux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := ds.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Warn("pprof listener failed", zap.Error(err))
			}
		}()
		defer ds.Close()
		log.Info("pprof listening", zap.String("addr", ln.Addr().String()))
	}
	sigs := make(chan os.Signal, 2)
	srv.SetAdminHooks(router.AdminHooks{
		Reload: func() error { return reload(srv, sources, path, log, level) },
		Shutdown: func() {
			select {
			case sigs <- syscall.SIGTERM:
			default:
			}
		},
	})
	ready.Store(true)
	log.Info("pgferry ready", zap.String("config", path))

	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	var changes <-chan []string // nil without a watcher: never ready
	var watcher *watch.Watcher
	if cfg.WatchConfig {
		w, err := watch.New(watchedFiles(path, cfg), 500*time.Millisecond)
		if err != nil {
			log.Warn("cannot watch the config files; reload with SIGHUP or RELOAD", zap.Error(err))
		} else {
			defer w.Close()
			changes = w.Changes()
			go func() {
				for err := range w.Errors() {
					log.Warn("config file watcher", zap.Error(err))
				}
			}()
			watcher = w
		}
	}
	for {
		var sig os.Signal
		select {
		case sig = <-sigs:
		case changed, ok := <-changes:
			if !ok {
				changes = nil
				continue
			}
			log.Info("config files changed; reloading", zap.Strings("files", changed))
			if reload(srv, sources, path, log, level) == nil && watcher != nil {
				watcher.SetPaths(watchedFiles(path, srv.Config()))
			}
			continue
		}
		if sig == syscall.SIGHUP {
			reload(srv, sources, path, log, level)
			continue
		}
		ready.Store(false)
		log.Info("shutting down", zap.String("signal", sig.String()),
			zap.Duration("shutdown_timeout", srv.Config().ShutdownTimeout.Std()))
		done := make(chan struct{})
		go func() {
			sctx, cancel := context.WithTimeout(context.Background(), srv.Config().ShutdownTimeout.Std())
			defer cancel()
			srv.Shutdown(sctx)
			close(done)
		}()
		for {
			select {
			case <-done:
				return 0
			case s2 := <-sigs:
				if s2 == syscall.SIGHUP {
					continue
				}
				log.Warn("second signal: exiting now", zap.String("signal", s2.String()))
				if s2 == syscall.SIGINT {
					return 130
				}
				return 143
			}
		}
	}
}

// watchedFiles lists the files whose change reloads the config: the files
// a pgbouncer.ini read through %include too.
func watchedFiles(path string, cfg *configs.Config) []string {
	return append([]string{path, cfg.AuthFile, cfg.AuthHBAFile}, cfg.Included...)
}

// reload re-reads the config file (SIGHUP, admin RELOAD). An invalid file
// is rejected with the reason and the old config stays in force.
func reload(srv *router.Server, sources *tokenSources, path string, log *zap.Logger, level zap.AtomicLevel) error {
	cfg, warnings, err := configs.Load(path)
	if err != nil {
		log.Error("reload rejected: invalid config; the old one stays in force", zap.Error(err))
		return err
	}
	for _, w := range warnings {
		log.Warn("config warning", zap.String("warning", w))
	}
	if err := srv.Reload(cfg); err != nil {
		log.Error("reload rejected; the old config stays in force", zap.Error(err))
		return err
	}
	sources.retain(cfg)
	if l, err := zap.ParseAtomicLevel(cfg.LogLevel); err == nil {
		level.SetLevel(l.Level())
	}
	return nil
}

// tokenSources builds one Entra ID token source per identity and keeps
// them refreshing in the background until close, or until a reload leaves
// no database using their identity (retain).
type tokenSources struct {
	ctx     context.Context
	log     *zap.Logger
	metrics *metrics.Metrics
	// mu guards byID: pools are created concurrently by sessions.
	mu   sync.Mutex
	byID map[string]*entra.TokenSource
}

func newTokenSources(ctx context.Context, log *zap.Logger) *tokenSources {
	return &tokenSources{ctx: ctx, log: log, byID: make(map[string]*entra.TokenSource)}
}

// entraIdentity returns the token source settings of database dbName and
// the key of its identity: pools whose databases have the same key share
// a source. Everything the credential is built from is in the key, so a
// database that names another secret file or token file gets its own.
func entraIdentity(dbName string, db configs.Database) (entra.Config, string) {
	ec := entra.Config{
		Credential:       db.EntraCredential,
		ClientID:         db.EntraClientID,
		TenantID:         db.EntraTenantID,
		ClientSecretFile: db.EntraClientSecretFile,
		ClientSecretEnv:  db.EntraClientSecretEnv,
		TokenFile:        db.EntraTokenFile,
		AuthorityHost:    db.EntraAuthorityHost,
		Scope:            db.EntraScope,
		Database:         dbName,
	}
	id := fmt.Sprintf("%q|%q|%q|%q|%q|%q|%q|%q", ec.Credential, ec.ClientID, ec.TenantID, ec.AuthorityHost, ec.Scope,
		ec.ClientSecretFile, ec.ClientSecretEnv, ec.TokenFile)
	return ec, id
}

// get is router.Options.PasswordSource, called once per new pool,
// concurrently; pools share a source per identity.
func (t *tokenSources) get(dbName string, db configs.Database) (pool.PasswordSource, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ec, id := entraIdentity(dbName, db)
	if s, ok := t.byID[id]; ok {
		return s, nil
	}
	cred, err := entra.NewCredential(ec)
	if err != nil {
		return nil, fmt.Errorf("databases.%s: %w", dbName, err)
	}
	s := entra.NewTokenSource(cred, ec)
	s.Start(t.ctx)
	t.byID[id] = s
	if t.metrics != nil {
		t.metrics.AddTokenSource(dbName, s)
	}
	return s, nil
}

// retain closes the sources of identities no database of cfg (the config
// a reload put in force) logs in with, and takes them out of the metrics:
// their pools were rebuilt by the reload, and closed pools make no login.
// Without it, a source whose database changed identity went on refreshing
// its token for good, and its series and the new source's had the same
// database label, which fails every scrape.
func (t *tokenSources) retain(cfg *configs.Config) {
	keep := make(map[string]bool)
	for name, db := range cfg.Databases {
		if db.Auth == "entra" {
			_, id := entraIdentity(name, db)
			keep[id] = true
		}
	}
	var gone []*entra.TokenSource
	t.mu.Lock()
	for id, s := range t.byID {
		if !keep[id] {
			delete(t.byID, id)
			gone = append(gone, s)
		}
	}
	t.mu.Unlock()
	for _, s := range gone {
		if t.metrics != nil {
			t.metrics.RemoveTokenSource(s)
		}
		s.Close()
	}
}

func (t *tokenSources) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range t.byID {
		s.Close()
	}
}

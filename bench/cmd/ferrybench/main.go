// Command ferrybench compares pgferry with one or more PgBouncer versions
// (and with PostgreSQL reached directly) on one machine, in one run, from one
// shared pgbouncer.ini.
//
// It starts a throwaway PostgreSQL 15 cluster (internal/pgtest), loads it with
// pgbench -i, writes a userlist.txt holding the SCRAM secret of the "app" role
// and the ini, starts pgferry and each PgBouncer binary (by default Debian's
// /usr/sbin/pgbouncer and, when present, ../shared/anchors/pgbouncer/pgbouncer)
// on its own port, each PgBouncer from its own copy of the ini, then runs
// pgbench scenarios, idle-connection memory tests (plain and TLS clients), a
// single-client latency test and (optionally) a callgrind instruction count.
// Everything it starts is stopped on exit, on errors and on Ctrl-C.
//
// Usage (from the repository root):
//
//	go run ./bench/cmd/ferrybench [-quick] [-scenarios a,b] [-pgbouncer path,path] [-out bench/results/latest.md]
//
// See bench/README.md for the scenarios and how to read the table.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// allScenarios lists every -scenarios name in run order. Throughput
// scenarios run against each target one after another.
var allScenarios = []string{
	"idle", "idle-tls", "latency",
	"simple", "extended", "prepared", "tls", "tpcb", "connect", "connect-tls", "c1000", "c10000",
	"kernel", "instructions",
}

type options struct {
	quick     bool
	scenarios map[string]bool
	out       string
	duration  time.Duration
	scale     int
	idleSteps []int
	keepTemp  bool
	rev       string
	rounds    int // throughput runs per scenario and target
	// godebug is GODEBUG for pgferry (-godebug); empty: Go's defaults.
	godebug string
	// ferryEnv are extra PGFERRY_* settings for pgferry (-ferry-env), to
	// measure a pgferry-only key (e.g. PGFERRY_RELAY_LOOP=true).
	ferryEnv []string
	// bouncerBins are the -pgbouncer paths; none means the default.
	bouncerBins []string
	// instrWorkload is the pgbench workload whose transactions callgrind
	// counts (-instr-workload; a key of instrWorkloads).
	instrWorkload string
}

// instrWorkloads are the pgbench arguments of each workload the
// instruction count can measure: select-only by the simple protocol (the
// default, the figure the targets name), by the extended protocol with the
// unnamed statement, with named prepared statements, and the TPC-B-like
// transaction of seven statements (BEGIN, three UPDATEs, a SELECT, an
// INSERT, END), each a round trip.
var instrWorkloads = map[string][]string{
	"select":   {"-S"},
	"extended": {"-S", "-M", "extended"},
	"prepared": {"-S", "-M", "prepared"},
	"tpcb":     {"-b", "tpcb-like"},
}

func (o options) want(name string) bool { return o.scenarios[name] }

func main() {
	os.Exit(run())
}

func run() int {
	var (
		quick     = flag.Bool("quick", false, "short runs (3 s) on a scale-1 database; skips the instruction count")
		scenarios = flag.String("scenarios", "", "comma-separated subset of: "+strings.Join(allScenarios, ","))
		out       = flag.String("out", "bench/results/latest.md", "Markdown report path (relative paths are taken from the module root)")
		duration  = flag.Duration("duration", 0, "duration of each pgbench run (default 10s, 3s with -quick)")
		keepTemp  = flag.Bool("keep", false, "keep the temporary directory (pooler logs, ini) for inspection")
		rev       = flag.String("rev", "", "build pgferry from this git revision (git archive) instead of the working tree")
		rounds    = flag.Int("rounds", 1, "run each throughput scenario this many times, the targets taking turns; the tables show medians")
		godebug   = flag.String("godebug", "", "GODEBUG for pgferry, to measure a runtime setting (e.g. adaptivestackstart=0); default: none, as shipped")
		ferryEnv  = flag.String("ferry-env", "", "comma-separated PGFERRY_KEY=value settings for pgferry only, to measure a pgferry key (e.g. PGFERRY_RELAY_LOOP=true); default: none")
		instrLoad = flag.String("instr-workload", "select", "pgbench workload whose transactions the instruction count measures: select (-S), extended (-S -M extended), prepared (-S -M prepared) or tpcb (tpcb-like); logins are always measured with select")
		bouncers  = flag.String("pgbouncer", "", "comma-separated PgBouncer binaries to compare with, each a target named by its version (relative paths are taken from the module root; default "+pgbouncerPath+", plus "+anchorPgbouncer+" if it exists)")
	)
	flag.Parse()

	if *rounds < 1 {
		fmt.Fprintln(os.Stderr, "ferrybench: -rounds must be at least 1")
		return 2
	}
	if _, ok := instrWorkloads[*instrLoad]; !ok {
		fmt.Fprintf(os.Stderr, "ferrybench: -instr-workload takes select, extended, prepared or tpcb, not %q\n", *instrLoad)
		return 2
	}
	o := options{quick: *quick, out: *out, duration: *duration, keepTemp: *keepTemp, rev: *rev, scale: 10,
		idleSteps: []int{1000, 10000}, rounds: *rounds, godebug: *godebug, instrWorkload: *instrLoad}
	for _, kv := range strings.Split(*ferryEnv, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		if !strings.HasPrefix(kv, "PGFERRY_") || !strings.Contains(kv, "=") {
			fmt.Fprintf(os.Stderr, "ferrybench: -ferry-env takes PGFERRY_KEY=value settings, not %q\n", kv)
			return 2
		}
		o.ferryEnv = append(o.ferryEnv, kv)
	}
	for _, b := range strings.Split(*bouncers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			o.bouncerBins = append(o.bouncerBins, b)
		}
	}
	if o.duration == 0 {
		o.duration = 10 * time.Second
		if o.quick {
			o.duration = 3 * time.Second
		}
	}
	if o.quick {
		o.scale = 1
	}
	o.scenarios = map[string]bool{}
	if *scenarios == "" {
		for _, s := range allScenarios {
			o.scenarios[s] = true
		}
		if o.quick {
			o.scenarios["instructions"] = false
		}
	} else {
		for _, s := range strings.Split(*scenarios, ",") {
			s = strings.TrimSpace(s)
			if !slices.Contains(allScenarios, s) {
				fmt.Fprintf(os.Stderr, "ferrybench: unknown scenario %q (known: %s)\n", s, strings.Join(allScenarios, ","))
				return 2
			}
			o.scenarios[s] = true
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if err := bench(ctx, o); err != nil {
		if errors.Is(err, context.Canceled) || ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "ferrybench: interrupted; everything started was stopped")
			return 130
		}
		fmt.Fprintln(os.Stderr, "ferrybench:", err)
		return 1
	}
	return 0
}

// logf reports progress on stderr; the report itself goes to stdout.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func bench(ctx context.Context, o options) (err error) {
	started := time.Now()
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	if !filepath.IsAbs(o.out) {
		o.out = filepath.Join(root, o.out)
	}
	if err := raiseNoFile(65536); err != nil {
		return err
	}

	env, err := setup(ctx, o, root)
	// setup returns a usable env (possibly partial) even on error, so that
	// everything it started is torn down.
	defer env.close()
	if err != nil {
		return err
	}

	rep := &report{opts: o, meta: collectMeta(root, env), bouncers: env.bouncerNames()}
	rep.notes = append(rep.notes, env.notes...)

	for _, kind := range []idleKind{idlePlain, idleTLS} {
		if !o.want(kind.scenario) {
			continue
		}
		for _, t := range env.poolers() {
			if err := ctx.Err(); err != nil {
				return err
			}
			rep.idle = append(rep.idle, idleMemory(ctx, env, t, kind, o.idleSteps))
		}
		// Start what follows (idle-tls, the throughput runs) from fresh
		// poolers: the Go heap of a pooler that just held 10,000 clients
		// is not representative.
		if err := env.restartPoolers(ctx); err != nil {
			return err
		}
	}
	if o.want("latency") {
		for _, t := range env.targets() {
			if err := ctx.Err(); err != nil {
				return err
			}
			rep.latency = append(rep.latency, addedLatency(ctx, env, t, 2000))
		}
	}
	for _, sc := range scenarioList(o) {
		// Rounds interleave the targets, so that a slow spell of the shared
		// machine does not land on one target only.
		for round := range o.rounds {
			for _, t := range env.targets() {
				if err := ctx.Err(); err != nil {
					return err
				}
				if t.direct && !sc.direct {
					if round == 0 {
						rep.runs = append(rep.runs, runResult{scenario: sc, target: t.name, skipped: sc.noDirectWhy})
					}
					continue
				}
				r := runPgbench(ctx, env, sc, t)
				if err := ctx.Err(); err != nil {
					return err
				}
				r.round = round
				rep.runs = append(rep.runs, r)
				logf("  %-9s %-16s %s", sc.name, t.name, r.summary())
			}
		}
	}
	if o.want("kernel") {
		for _, t := range env.poolers() {
			if err := ctx.Err(); err != nil {
				return err
			}
			rep.kernel = append(rep.kernel, kernelProbe(ctx, env, t, o.duration))
		}
	}
	if o.want("instructions") {
		for _, t := range env.poolers() {
			if err := ctx.Err(); err != nil {
				return err
			}
			rep.instr = append(rep.instr, instructionCount(ctx, env, t))
		}
	}
	rep.elapsed = time.Since(started)

	md := rep.markdown()
	fmt.Print(md)
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(o.out, []byte(md), 0o644); err != nil {
		return err
	}
	logf("report written to %s (%s)", o.out, rep.elapsed.Round(time.Second))
	return nil
}

// nofile is the RLIMIT_NOFILE every child inherits.
var nofile uint64

// raiseNoFile sets RLIMIT_NOFILE (soft and hard) to n, or as high as
// allowed. Children (pgbench, both poolers) inherit it: syscall.Setrlimit
// tells os/exec not to restore the soft limit Go saw at start-up.
func raiseNoFile(n uint64) error {
	lim := syscall.Rlimit{Cur: n, Max: n}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil {
		nofile = n
		return nil
	}
	// Without CAP_SYS_RESOURCE (containers) the hard limit cannot grow.
	var cur syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &cur); err != nil {
		return fmt.Errorf("getrlimit: %w", err)
	}
	cur.Cur = cur.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &cur); err != nil {
		return fmt.Errorf("setrlimit NOFILE: %w", err)
	}
	nofile = cur.Cur
	if cur.Cur < 12000 {
		logf("warning: RLIMIT_NOFILE is only %d; the 10,000-client runs will fail", cur.Cur)
	}
	return nil
}

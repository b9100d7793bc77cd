package main

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// idleResult is the RSS of one pooler holding idle logged-in clients.
type idleResult struct {
	target    string
	scenario  string // idleKind.scenario: "idle" or "idle-tls"
	tls       string // version and cipher suite negotiated; empty for plain clients
	rssBefore int64
	steps     []idleStep
	err       string
}

// idleKind is how the clients of an idle-memory run log in. The runs are
// otherwise the same (steps, settle time, concurrency), so the plain and
// the TLS figures differ only by what TLS costs the pooler.
type idleKind struct {
	scenario string // the -scenarios name, also the label in the log
	login    func(e *env, ctx context.Context, port int, timeout time.Duration) (net.Conn, error)
}

// idlePlain and idleTLS are the idle and idle-tls scenarios.
var (
	idlePlain = idleKind{scenario: "idle", login: (*env).login}
	idleTLS   = idleKind{scenario: "idle-tls", login: (*env).loginTLS}
)

type idleStep struct {
	clients int   // connections held
	failed  int   // logins that failed on the way to clients
	rss     int64 // VmRSS with them held
	took    time.Duration
}

// bytesPerClient is (RSS - RSS before) / clients.
func (r idleResult) bytesPerClient(s idleStep) float64 {
	if s.clients == 0 {
		return math.NaN()
	}
	return float64(s.rss-r.rssBefore) / float64(s.clients)
}

const idleConcurrency = 200

// idleSettle is how long clients stay idle before RSS is read.
const idleSettle = 10 * time.Second

// idleMemory logs in clients to t up to each count in steps (cumulatively),
// each the way kind says, holding them idle, and reads the pooler's VmRSS
// after each step.
func idleMemory(ctx context.Context, e *env, t *target, kind idleKind, steps []int) idleResult {
	r := idleResult{target: t.name, scenario: kind.scenario}
	pid := t.proc.pid()
	// RSS is read after the clients have been idle for idleSettle: pgferry
	// parks sessions idle through a whole one-second sweep, PgBouncer has
	// nothing to wait for.
	settle := func() (int64, error) {
		time.Sleep(idleSettle)
		return rssBytes(pid)
	}
	var err error
	if r.rssBefore, err = settle(); err != nil {
		r.err = err.Error()
		return r
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
		// Give the pooler a moment to notice the disconnects.
		time.Sleep(time.Second)
	}()
	for _, want := range steps {
		start := time.Now()
		need := want - len(conns)
		failed := 0
		var lastErr error
		sem := make(chan struct{}, idleConcurrency)
		var wg sync.WaitGroup
		for i := 0; i < need; i++ {
			if ctx.Err() != nil {
				break
			}
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				c, err := kind.login(e, ctx, t.port, 30*time.Second)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					failed++
					lastErr = err
					return
				}
				if r.tls == "" {
					r.tls = tlsSummary(c)
				}
				conns = append(conns, c)
			}()
		}
		wg.Wait()
		rss, err := settle()
		if err != nil {
			r.err = err.Error()
			return r
		}
		st := idleStep{clients: len(conns), failed: failed, rss: rss, took: time.Since(start)}
		r.steps = append(r.steps, st)
		logf("  %-9s %-16s %5d clients: RSS %s (%.0f B/client)%s", kind.scenario, t.name, st.clients, mib(rss), r.bytesPerClient(st),
			map[bool]string{true: fmt.Sprintf(", %d logins failed: %v", failed, lastErr), false: ""}[failed > 0])
		if ctx.Err() != nil {
			return r
		}
	}
	return r
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// latencyResult is the single-client round-trip time of "select 1".
type latencyResult struct {
	target   string
	p50, p99 float64 // microseconds
	n        int
	err      string
}

// addedLatency runs "select 1" n times over one pgx connection using the
// simple protocol and records each round trip.
func addedLatency(ctx context.Context, e *env, t *target, n int) latencyResult {
	r := latencyResult{target: t.name}
	cfg, err := pgx.ParseConfig(dsn(t.port))
	if err != nil {
		r.err = err.Error()
		return r
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	c, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		r.err = err.Error()
		return r
	}
	defer c.Close(context.Background())
	for range 200 { // warm-up: the pooler's server connection, caches
		if _, err := c.Exec(cctx, "select 1"); err != nil {
			r.err = err.Error()
			return r
		}
	}
	lat := make([]float64, 0, n)
	for range n {
		s := time.Now()
		if _, err := c.Exec(cctx, "select 1"); err != nil {
			r.err = err.Error()
			return r
		}
		lat = append(lat, float64(time.Since(s).Nanoseconds())/1000)
	}
	slices.Sort(lat)
	r.p50, r.p99, r.n = percentile(lat, 0.50), percentile(lat, 0.99), n
	logf("  latency   %-16s p50=%.0fµs p99=%.0fµs", t.name, r.p50, r.p99)
	return r
}

// instrResult is the instruction count per transaction under callgrind.
type instrResult struct {
	target  string
	perTx   float64
	base    int64 // instructions of the short run
	full    int64 // instructions of the long run
	tx      int64 // transactions the difference covers
	took    time.Duration
	skipped string
	clients int
	shortTx int
	longTx  int
	parts   []costShare // where the instructions per transaction go

	// The same for logins: pgbench -C, a login per transaction.
	perLogin   float64
	loginBase  int64 // instructions of the short -C run
	loginFull  int64 // instructions of the long -C run
	logins     int64 // logins the difference covers
	loginParts []costShare
	loginErr   string // why perLogin is missing
	shortLogin int
	longLogin  int
}

// instructionCount runs the pooler under valgrind --tool=callgrind. After a
// warm-up run (server connections opened) the counters are zeroed; then
// pgbench -S -c 4 runs with -t shortTx and with -t longTx, each followed by
// callgrind_control --dump (which also zeroes). Both dumps hold the same
// client logins, so their difference divided by the extra transactions is
// the per-transaction cost; three such pairs are run and the median kept.
// Three pairs of runs with -C (a login per transaction), -t shortLogin and
// -t longLogin, give the cost per login in the same way.
//
// A Go program under callgrind must not receive signals (callgrind asserts
// in vgCallgrind_post_signal), so pgferry runs with
// GODEBUG=asyncpreemptoff=1 and both poolers are ended with SIGKILL.
func instructionCount(ctx context.Context, e *env, t *target) instrResult {
	const clients, shortTx, longTx, shortLogin, longLogin = 4, 200, 2000, 50, 250
	r := instrResult{target: t.name, clients: clients, shortTx: shortTx, longTx: longTx, shortLogin: shortLogin, longLogin: longLogin}
	for _, bin := range []string{"valgrind", "callgrind_control"} {
		if _, err := exec.LookPath(bin); err != nil {
			r.skipped = bin + " not installed"
			return r
		}
	}
	start := time.Now()
	// The normal pooler gives up its port to the one under valgrind.
	b := t.bouncer
	restart := e.startFerry
	if b == nil {
		e.ferry.stop()
	} else {
		b.proc.stop()
		restart = func(ctx context.Context, wrapper []string) (*proc, error) { return e.startBouncer(ctx, b, wrapper) }
	}
	defer func() {
		if ctx.Err() != nil {
			return
		}
		p, err := restart(ctx, nil)
		if err != nil {
			logf("restart %s after callgrind: %v", t.name, err)
		}
		if b == nil {
			e.ferry = p
		} else {
			b.proc = p
		}
	}()
	out := filepath.Join(e.tmp, "callgrind."+fileName(t.name))
	p, err := restart(ctx, []string{"valgrind", "--tool=callgrind", "--callgrind-out-file=" + out})
	if err != nil {
		r.skipped = "start under valgrind: " + truncate(err.Error(), 300)
		return r
	}
	defer p.kill()

	// pgbench runs the measured workload; logins (-C) are always counted
	// with select-only transactions.
	pgbench := func(txs int, extra ...string) error {
		cctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
		defer cancel()
		workload := instrWorkloads[e.opts.instrWorkload]
		if slices.Contains(extra, "-C") {
			workload = instrWorkloads["select"]
		}
		args := append(append([]string{"-n", "-c", strconv.Itoa(clients), "-j", "1", "-t", strconv.Itoa(txs)}, workload...), extra...)
		b, err := pgbenchCmd(cctx, t.port, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("pgbench -t %d %s under callgrind: %v: %s", txs, strings.Join(extra, " "), err, firstError(string(b)))
		}
		return nil
	}
	control := func(flag string) error {
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		argv := []string{"callgrind_control", flag, strconv.Itoa(p.pid())}
		if b != nil && e.cred != nil {
			// vgdb only finds the FIFOs of a valgrind'ed process of the
			// same user, with that user's login environment.
			argv = append([]string{"runuser", "-u", poolerUser, "--"}, argv...)
		}
		cmd := exec.CommandContext(cctx, argv[0], argv[1:]...)
		b, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("callgrind_control %s: %v: %s", flag, err, truncate(strings.TrimSpace(string(b)), 200))
		}
		return nil
	}
	if err := pgbench(20); err != nil { // warm-up: server connections
		r.skipped = err.Error()
		return r
	}
	if err := control("--zero"); err != nil {
		r.skipped = err.Error()
		return r
	}
	// pair runs pgbench -t short and -t long, each followed by a dump
	// (numbered from first), and returns the two dumps' totals.
	pair := func(first, short, long int, extra ...string) (counts [2]int64, err error) {
		for i, txs := range []int{short, long} {
			if err = pgbench(txs, extra...); err != nil {
				return counts, err
			}
			if err = control("--dump"); err != nil {
				return counts, err
			}
			if counts[i], err = waitCallgrindDump(ctx, fmt.Sprintf("%s.%d", out, first+i)); err != nil {
				return counts, err
			}
		}
		return counts, nil
	}
	// Both are measured three times and the median pair kept: now and
	// then (two runs in about ten) a Go runtime thread spins for millions
	// of instructions while valgrind, which runs one thread at a time,
	// keeps the others waiting; one login pair came out 4.8 times the
	// rest, and transaction pairs of one build spread by a fifth.
	type medianPair struct {
		first   int
		counts  [2]int64
		perUnit float64
	}
	median := func(first, short, long int, units int64, extra ...string) (med medianPair, all [3]float64, err error) {
		var pairs []medianPair
		for k := range 3 {
			counts, err := pair(first+2*k, short, long, extra...)
			if err != nil {
				return med, all, err
			}
			pairs = append(pairs, medianPair{first + 2*k, counts, float64(counts[1]-counts[0]) / float64(units)})
		}
		slices.SortFunc(pairs, func(x, y medianPair) int { return cmp.Compare(x.perUnit, y.perUnit) })
		return pairs[1], [3]float64{pairs[0].perUnit, pairs[1].perUnit, pairs[2].perUnit}, nil
	}
	r.tx = int64(clients * (longTx - shortTx))
	med, all, err := median(1, shortTx, longTx, r.tx)
	if err != nil {
		r.skipped = err.Error()
		return r
	}
	r.base, r.full, r.perTx = med.counts[0], med.counts[1], med.perUnit
	r.took = time.Since(start)
	if r.parts, err = instrBreakdown(fmt.Sprintf("%s.%d", out, med.first), fmt.Sprintf("%s.%d", out, med.first+1), r.tx, t.name == "pgferry"); err != nil {
		logf("  callgrind %s breakdown: %v", t.name, err)
	}
	logf("  callgrind %-16s %.0f instructions/tx (median of %.0f, %.0f, %.0f; %s)", t.name, r.perTx, all[0], all[1], all[2], r.took.Round(time.Second))

	r.logins = int64(clients * (longLogin - shortLogin))
	med, all, err = median(7, shortLogin, longLogin, r.logins, "-C")
	if err != nil {
		r.loginErr = err.Error()
		return r
	}
	r.loginBase, r.loginFull, r.perLogin = med.counts[0], med.counts[1], med.perUnit
	if r.loginParts, err = instrBreakdown(fmt.Sprintf("%s.%d", out, med.first), fmt.Sprintf("%s.%d", out, med.first+1), r.logins, t.name == "pgferry"); err != nil {
		logf("  callgrind %s login breakdown: %v", t.name, err)
	}
	logf("  callgrind %-16s %.0f instructions/login (median of %.0f, %.0f, %.0f)", t.name, r.perLogin, all[0], all[1], all[2])
	return r
}

// waitCallgrindDump waits for a dump file to be complete and returns its
// instruction total.
func waitCallgrindDump(ctx context.Context, path string) (int64, error) {
	var err error
	for range 100 {
		var v int64
		if v, err = callgrindTotal(path); err == nil {
			return v, nil
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return 0, err
}

// callgrindTotal reads the "summary:" (or "totals:") Ir count of a callgrind
// output file.
func callgrindTotal(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		// Go programs that re-exec or fork would write out.<pid>; not ours.
		return 0, fmt.Errorf("callgrind output: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var total int64 = -1
	for sc.Scan() {
		line := sc.Text()
		for _, p := range []string{"summary:", "totals:"} {
			if rest, ok := strings.CutPrefix(line, p); ok {
				f := strings.Fields(rest)
				if len(f) > 0 {
					if v, err := strconv.ParseInt(f[0], 10, 64); err == nil {
						total = v
					}
				}
			}
		}
	}
	if total < 0 {
		return 0, fmt.Errorf("no summary line in %s", path)
	}
	return total, sc.Err()
}

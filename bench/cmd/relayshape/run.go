//go:build linux

package main

import (
	"bufio"
	"context"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pgferry/pgferry/internal/localpg"
)

// direct is the target that is PostgreSQL itself, no relay.
const direct = "direct"

// clientCounts are the pgbench -c of the throughput runs (-clients).
var clientCounts []int

// result is one target's measurements in one round; NaN where not measured.
type result struct {
	instr   float64            // relay instructions per transaction (callgrind)
	parts   map[string]float64 // instr split by goPart
	netpoll float64            // calls to runtime.netpoll per transaction (callgrind)
	tps     []float64          // per clientCounts
	cpuMs   []float64          // relay CPU ms per 1,000 transactions
	userMs  []float64          // the user-space part of cpuMs
	csPerTx []float64          // relay context switches per transaction
	threads []float64          // relay threads at the end of the run
	// waits are epoll waits per transaction by waitEvents, per clientCounts
	// (perf stat; NaN without perf).
	waits [][len(waitEvents)]float64
}

type driver struct {
	ctx     context.Context
	cluster *localpg.Cluster
	self    string // this executable, run as "serve"
	tmp     string
	loops   int
	secs    int
	perf    bool               // count epoll waits with perf stat
	live    map[int]*relayProc // started and not yet killed, by pid
	// connect is the last 100-client run's connect phase, to size the
	// -T of bigger runs.
	connect time.Duration
}

func runMain(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	rounds := fs.Int("rounds", 3, "rounds; the targets take turns in each, and the table shows medians")
	shapeList := fs.String("shapes", "copy,inline,loop,loop-raw,loop-raw/1,loop-netpoll",
		"relay shapes to measure, besides PostgreSQL direct; shape/N runs a loop shape with N event loops")
	secs := fs.Int("T", 8, "pgbench -T (seconds) of each throughput run")
	loops := fs.Int("loops", 0, "event loops of the loop shapes (default: the relay's GOMAXPROCS)")
	clients := fs.String("clients", "100,1000", "pgbench -c of the throughput runs; runs above 100 clients happen in the first -c1000-rounds rounds only")
	noC1000 := fs.Bool("no-c1000", false, "skip the runs with more than 100 clients")
	c1000Rounds := fs.Int("c1000-rounds", 1, "rounds that include the 1,000-client runs (each takes some 30 s per target, most of it logins)")
	usePerf := fs.Bool("perf", true, "count the relay's epoll waits per transaction with perf stat (if perf runs)")
	keep := fs.Bool("keep", false, "keep the temporary directory (callgrind outputs, relay logs)")
	_ = fs.Parse(args)
	targets := append([]string{direct}, strings.Split(*shapeList, ",")...)
	for _, c := range strings.Split(*clients, ",") {
		n, err := strconv.Atoi(c)
		if err != nil || n < 1 {
			return fmt.Errorf("-clients: %q is not a client count", c)
		}
		if n <= 100 || !*noC1000 {
			clientCounts = append(clientCounts, n)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := raiseNoFile(); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "relayshape-*")
	if err != nil {
		return err
	}
	if *keep {
		defer logf("kept %s", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	self, err := relayBinary(ctx, tmp)
	if err != nil {
		return err
	}

	logf("starting PostgreSQL 15")
	cluster, err := localpg.Start(localpg.Options{
		HBA: []string{"host all all 127.0.0.1/32 trust"},
		// 1:1 relays: 1,000 clients are 1,000 backends.
		Conf: map[string]string{"max_connections": "1100"},
	})
	if err != nil {
		return err
	}
	defer cluster.Stop()
	d := &driver{ctx: ctx, cluster: cluster, self: self, tmp: tmp, loops: *loops, secs: *secs, perf: *usePerf && perfRuns(), live: map[int]*relayProc{}}
	defer d.killAll()
	if out, err := d.pgbench(cluster.Port, "-i", "-s", "1", "-q"); err != nil {
		return fmt.Errorf("pgbench -i: %v: %s", err, lastLine(out))
	}

	start := time.Now()
	results := map[string][]result{}
	for round := range *rounds {
		for k := range targets {
			// Rotate the order so that no target always runs first.
			t := targets[(k+round)%len(targets)]
			logf("round %d/%d: %s", round+1, *rounds, t)
			r, err := d.measure(t, round < *c1000Rounds)
			if ctx.Err() != nil {
				return fmt.Errorf("interrupted: %w", ctx.Err())
			}
			if err != nil {
				return fmt.Errorf("%s: %w", t, err)
			}
			results[t] = append(results[t], r)
		}
	}
	logf("done in %s", time.Since(start).Round(time.Second))
	printTables(targets, results, *rounds)
	return nil
}

func (d *driver) measure(target string, big bool) (result, error) {
	r := result{instr: math.NaN(), netpoll: math.NaN()}
	for _, c := range clientCounts {
		t := noThroughput()
		if c <= 100 || big {
			var err error
			if t, err = d.throughput(target, c); err != nil {
				return r, err
			}
		}
		r.tps, r.cpuMs, r.userMs = append(r.tps, t.tps), append(r.cpuMs, t.cpuMs), append(r.userMs, t.userMs)
		r.csPerTx, r.threads = append(r.csPerTx, t.csPerTx), append(r.threads, t.threads)
		r.waits = append(r.waits, t.waits)
	}
	if target == direct {
		return r, nil
	}
	var err error
	r.instr, r.parts, r.netpoll, err = d.instructions(target)
	return r, err
}

var (
	reTPS       = regexp.MustCompile(`tps = ([\d.]+)`)
	reProcessed = regexp.MustCompile(`number of transactions actually processed: (\d+)`)
	reConnTime  = regexp.MustCompile(`initial connection time = ([\d.]+) ms`)
)

// throughput is one pgbench run's figures; all but tps are the relay's
// and NaN for PostgreSQL direct.
type throughput struct {
	tps     float64
	cpuMs   float64 // CPU (user+system) ms per 1,000 transactions
	userMs  float64 // user CPU ms per 1,000 transactions
	csPerTx float64 // context switches per transaction
	threads float64 // at the end of the run
	waits   [len(waitEvents)]float64
}

// throughput runs pgbench -S -M simple with clients clients for d.secs of
// steady state against target. The relay's figures cover the steady state
// only, not the clients' logins.
func (d *driver) throughput(target string, clients int) (throughput, error) {
	t := noThroughput()
	if err := d.waitBackendsGone(); err != nil {
		return t, err
	}
	port := d.cluster.Port
	var p *relayProc
	if target != direct {
		var err error
		if p, err = d.startRelay(target, ""); err != nil {
			return t, err
		}
		defer d.kill(p)
		port = p.port
	}
	// pgbench's -T clock includes connecting the clients, one after another
	// per thread, and a PostgreSQL login takes some 25 ms on this machine:
	// with many clients, lengthen -T by the expected connect phase (and a
	// quarter as much again) so that every run has secs of steady state.
	secs := d.secs
	if clients > 100 && d.connect > 0 {
		secs += int((d.connect * time.Duration(clients) / 100 * 5 / 4).Seconds())
	}
	stopSampling := sample(p)
	stopPerf := func() []waitCounts { return nil }
	if p != nil && d.perf {
		stopPerf = perfWaits(p.cmd.Process.Pid, filepath.Join(d.tmp, fmt.Sprintf("perf-%s-c%d", strings.ReplaceAll(target, "/", "-"), clients)))
	}
	start := time.Now()
	out, err := d.pgbench(port, "-n", "-S", "-M", "simple", "-c", strconv.Itoa(clients), "-j", "2", "-T", strconv.Itoa(secs))
	samples := stopSampling()
	waits := stopPerf()
	m := reTPS.FindStringSubmatch(out)
	if err != nil || m == nil || reProcessed.FindStringSubmatch(out) == nil {
		return t, fmt.Errorf("pgbench -c %d: %v: %s", clients, err, lastLine(out))
	}
	t.tps, _ = strconv.ParseFloat(m[1], 64)
	var conn time.Duration
	if c := reConnTime.FindStringSubmatch(out); c != nil {
		ms, _ := strconv.ParseFloat(c[1], 64)
		conn = time.Duration(ms * float64(time.Millisecond))
	}
	if clients == 100 {
		d.connect = conn
	}
	if p != nil {
		// The steady state: from half a second after the clients are
		// connected to the last sample; pgbench's TPS excludes the connect
		// phase too, so TPS × window is the transactions in it.
		from := start.Add(conn + 500*time.Millisecond)
		i := slices.IndexFunc(samples, func(s cpuSample) bool { return !s.at.Before(from) })
		j := len(samples) - 1
		if i < 0 || j-i < 5 {
			return t, fmt.Errorf("c%d: no steady state (connecting took %s)", clients, conn)
		}
		a, b := samples[i], samples[j]
		tx := t.tps * b.at.Sub(a.at).Seconds()
		t.cpuMs = float64(b.ticks-a.ticks) / clkTck * 1000 / (tx / 1000)
		t.userMs = float64(b.utime-a.utime) / clkTck * 1000 / (tx / 1000)
		t.csPerTx = float64(b.switches-a.switches) / tx
		t.threads = float64(procThreads(p))
		// perf's intervals over the same window (perf started with
		// pgbench, give or take a few ms).
		var sum [len(waitEvents)]int64
		intervals := 0
		for _, w := range waits {
			if at := start.Add(w.at); at.After(a.at) && !at.After(b.at) {
				intervals++
				for k, n := range w.counts {
					sum[k] += n
				}
			}
		}
		if intervals > 0 {
			for k := range sum {
				t.waits[k] = float64(sum[k]) / (t.tps * 0.1 * float64(intervals))
			}
		}
	}
	logf("  c%-4d %-12s tps=%.0f cpu=%.1f ms/1k tx (user %.1f), %.2f ctx switches/tx, %.0f threads, netpoll blocking waits %.2f/tx (-T %d, connecting %s)",
		clients, target, t.tps, t.cpuMs, t.userMs, t.csPerTx, t.threads, t.waits[0], secs, conn.Round(time.Millisecond))
	return t, nil
}

func noThroughput() throughput {
	nan := math.NaN()
	return throughput{nan, nan, nan, nan, nan, [len(waitEvents)]float64{nan, nan, nan}}
}

type cpuSample struct {
	at                     time.Time
	ticks, utime, switches int64
}

// sample reads p's CPU time and context switches every 100 ms until the
// returned function is called; that function returns the samples. The
// last sample is taken before pgbench ends, while the clients still run.
func sample(p *relayProc) func() []cpuSample {
	if p == nil {
		return func() []cpuSample { return nil }
	}
	stop, done := make(chan struct{}), make(chan []cpuSample)
	go func() {
		var s []cpuSample
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-tk.C:
				ut, st := procCPU(p)
				s = append(s, cpuSample{time.Now(), ut + st, ut, procSwitches(p)})
			case <-stop:
				// Drop the samples of pgbench's last moments, when clients
				// are disconnecting.
				for len(s) > 0 && time.Since(s[len(s)-1].at) < 300*time.Millisecond {
					s = s[:len(s)-1]
				}
				done <- s
				return
			}
		}
	}()
	return func() []cpuSample { close(stop); return <-done }
}

// waitBackendsGone waits until the previous run's server connections have
// ended, so that every run starts from the same state (and 1,000 fresh
// backends fit under max_connections).
func (d *driver) waitBackendsGone() error {
	deadline := time.Now().Add(time.Minute)
	for {
		n, err := d.cluster.QueryInt(d.ctx, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
		if err != nil {
			return err
		}
		if n <= 1 { // this query's own connection
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d server connections still open after a minute", n-1)
		}
		if err := sleep(d.ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// instructions runs the relay under callgrind (as bench/cmd/ferrybench
// does for pgferry): after a warm-up the counters are zeroed, then
// pgbench -S -c 4 runs -t 200 and -t 2000, each followed by a dump; both
// dumps hold the same 4 logins, so instructions per transaction are
// (Ir(2000) - Ir(200)) / (4 × 1800). The relay runs with
// GODEBUG=asyncpreemptoff=1 (callgrind asserts on Go's preemption
// signals) and cpu.rdtscp=off (valgrind 3.19 cannot decode RDTSCP), and is
// ended with SIGKILL.
func (d *driver) instructions(shape string) (perTx float64, split map[string]float64, netpollPerTx float64, err error) {
	const clients, shortTx, longTx = 4, 200, 2000
	if err := d.waitBackendsGone(); err != nil {
		return 0, nil, 0, err
	}
	out := filepath.Join(d.tmp, "callgrind."+strings.ReplaceAll(shape, "/", "-"))
	p, err := d.startRelay(shape, out)
	if err != nil {
		return 0, nil, 0, err
	}
	defer d.kill(p)
	run := func(txs int) error {
		o, err := d.pgbench(p.port, "-n", "-S", "-c", strconv.Itoa(clients), "-j", "1", "-t", strconv.Itoa(txs))
		if err != nil {
			return fmt.Errorf("pgbench -t %d under callgrind: %v: %s", txs, err, lastLine(o))
		}
		return nil
	}
	control := func(flag string) error {
		o, err := exec.CommandContext(d.ctx, "callgrind_control", flag, strconv.Itoa(p.cmd.Process.Pid)).CombinedOutput()
		if err != nil {
			return fmt.Errorf("callgrind_control %s: %v: %s", flag, err, lastLine(string(o)))
		}
		return nil
	}
	if err := run(20); err != nil {
		return 0, nil, 0, err
	}
	if err := control("--zero"); err != nil {
		return 0, nil, 0, err
	}
	var totals [2]int64
	for i, txs := range []int{shortTx, longTx} {
		if err := run(txs); err != nil {
			return 0, nil, 0, err
		}
		if err := control("--dump"); err != nil {
			return 0, nil, 0, err
		}
		if totals[i], err = d.waitDump(fmt.Sprintf("%s.%d", out, i+1)); err != nil {
			return 0, nil, 0, err
		}
	}
	tx := float64(clients * (longTx - shortTx))
	perTx = float64(totals[1]-totals[0]) / tx
	a, npA, err1 := callgrindSelf(out + ".1")
	b, npB, err2 := callgrindSelf(out + ".2")
	if err := errors.Join(err1, err2); err != nil {
		return 0, nil, 0, err
	}
	split = map[string]float64{}
	for k, v := range b {
		split[k] = float64(v-a[k]) / tx
	}
	netpollPerTx = float64(npB-npA) / tx
	logf("  callgrind %-12s %.0f instructions/tx, %.2f runtime.netpoll calls/tx", shape, perTx, netpollPerTx)
	return perTx, split, netpollPerTx, nil
}

// waitDump waits for a dump file to be complete and returns its total.
func (d *driver) waitDump(path string) (int64, error) {
	var err error
	for range 100 {
		var v int64
		if v, err = callgrindTotal(path); err == nil {
			return v, nil
		}
		if serr := sleep(d.ctx, 100*time.Millisecond); serr != nil {
			return 0, serr
		}
	}
	return 0, err
}

func (d *driver) pgbench(port int, args ...string) (string, error) {
	cmd := exec.CommandContext(d.ctx, localpg.Binary("pgbench"), args...)
	cmd.Env = append(os.Environ(), "PGHOST=127.0.0.1", "PGPORT="+strconv.Itoa(port), "PGUSER=postgres",
		"PGDATABASE=postgres", "PGSSLMODE=disable", "PGGSSENCMODE=disable")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// relayBinary is this executable if it has a symbol table, which callgrind
// needs to name functions, and otherwise a fresh build of it in dir: `go
// run` links with -s -w.
func relayBinary(ctx context.Context, dir string) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	if f, err := elf.Open(self); err == nil {
		syms, _ := f.Symbols()
		f.Close()
		if len(syms) > 0 {
			return self, nil
		}
	}
	const pkg = "github.com/pgferry/pgferry/bench/cmd/relayshape"
	out := filepath.Join(dir, "relayshape")
	logf("building %s with its symbol table (this binary has none)", pkg)
	if b, err := exec.CommandContext(ctx, "go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v: %s", pkg, err, b)
	}
	return out, nil
}

// relayProc is a "relayshape serve" process started by the driver, which
// kills it.
type relayProc struct {
	cmd  *exec.Cmd
	port int
	done chan struct{} // closed when cmd.Wait returns
	log  string
}

// startRelay starts "serve -shape shape" (shape/N: with -loops N), under
// callgrind writing to callgrindOut if that is set, and waits for its
// "listening" line.
func (d *driver) startRelay(target, callgrindOut string) (*relayProc, error) {
	shape, loops, ok := strings.Cut(target, "/")
	argv := []string{d.self, "serve", "-shape", shape, "-listen", "127.0.0.1:0",
		"-server", fmt.Sprintf("127.0.0.1:%d", d.cluster.Port)}
	switch {
	case ok:
		argv = append(argv, "-loops", loops)
	case d.loops > 0:
		argv = append(argv, "-loops", strconv.Itoa(d.loops))
	}
	env := os.Environ()
	if callgrindOut != "" {
		argv = append([]string{"valgrind", "--tool=callgrind", "--callgrind-out-file=" + callgrindOut}, argv...)
		env = append(env, "GODEBUG=asyncpreemptoff=1,cpu.rdtscp=off")
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	// A process group of its own: Ctrl-C reaches only the driver, which
	// kills the group (valgrind included) before stopping PostgreSQL.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p := &relayProc{cmd: cmd, done: make(chan struct{}), log: filepath.Join(d.tmp, "relay-"+strings.ReplaceAll(target, "/", "-")+".log")}
	logFile, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd.Stderr = logFile
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", target, err)
	}
	d.live[cmd.Process.Pid] = p
	go func() { _ = cmd.Wait(); close(p.done) }()

	addr := make(chan string, 1)
	go func() { // ends when the relay exits and stdout closes
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "listening "); ok {
				addr <- a
			}
		}
	}()
	select {
	case a := <-addr:
		_, port, _ := strings.Cut(a, ":")
		p.port, _ = strconv.Atoi(port)
		return p, nil
	case <-p.done:
		b, _ := os.ReadFile(p.log)
		return nil, fmt.Errorf("relay %s exited during start-up: %s", target, lastLine(string(b)))
	case <-time.After(2 * time.Minute):
		d.kill(p)
		return nil, fmt.Errorf("relay %s not listening after 2 minutes", target)
	case <-d.ctx.Done():
		d.kill(p)
		return nil, d.ctx.Err()
	}
}

// kill ends p's process group with SIGKILL (a Go program under callgrind
// must not get other signals) and waits for p to exit.
func (d *driver) kill(p *relayProc) {
	if p == nil {
		return
	}
	pid := p.cmd.Process.Pid
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	<-p.done
	delete(d.live, pid)
}

func (d *driver) killAll() {
	for _, p := range d.live {
		d.kill(p)
	}
}

// procCPU is utime and stime of p in clock ticks, from /proc/<pid>/stat.
func procCPU(p *relayProc) (utime, stime int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0, 0
	}
	// The command name (field 2) may hold spaces; fields after ")" are fixed.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, 0
	}
	utime, _ = strconv.ParseInt(f[11], 10, 64) // field 14
	stime, _ = strconv.ParseInt(f[12], 10, 64) // field 15
	return utime, stime
}

// procSwitches is the voluntary plus involuntary context switches of all
// of p's threads.
func procSwitches(p *relayProc) int64 {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", p.cmd.Process.Pid))
	var n int64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasSuffix(strings.SplitN(line, ":", 2)[0], "voluntary_ctxt_switches") {
				v, _ := strconv.ParseInt(strings.TrimSpace(strings.SplitN(line, ":", 2)[1]), 10, 64)
				n += v
			}
		}
	}
	return n
}

func procThreads(p *relayProc) int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", p.cmd.Process.Pid))
	return len(tasks)
}

// clkTck is USER_HZ, 100 on Linux.
const clkTck = 100

// raiseNoFile lifts the soft RLIMIT_NOFILE to the hard limit; children
// (pgbench, the relays) inherit it.
func raiseNoFile() error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("getrlimit: %w", err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("setrlimit: %w", err)
	}
	if lim.Cur < 2*uint64(slices.Max(clientCounts))+100 {
		return fmt.Errorf("RLIMIT_NOFILE is %d, too low for %d clients; use -no-c1000", lim.Cur, slices.Max(clientCounts))
	}
	return nil
}

func sleep(ctx context.Context, dur time.Duration) error {
	t := time.NewTimer(dur)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

package main

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// scenario is one pgbench configuration, run against every target.
type scenario struct {
	name        string
	title       string
	clients     int
	args        []string // pgbench arguments besides -c/-j/-T and logging
	direct      bool     // also run against PostgreSQL directly
	noDirectWhy string
	tls         bool // clients connect with sslmode=require
}

func scenarioList(o options) []scenario {
	noDirect := "PostgreSQL max_connections = 300"
	all := []scenario{
		{name: "simple", title: "select-only -M simple", clients: 100, args: []string{"-S", "-M", "simple"}, direct: true},
		{name: "extended", title: "select-only -M extended", clients: 100, args: []string{"-S", "-M", "extended"}, direct: true},
		{name: "prepared", title: "select-only -M prepared", clients: 100, args: []string{"-S", "-M", "prepared"}, direct: true},
		{name: "tls", title: "select-only -M simple, TLS clients", clients: 100, args: []string{"-S", "-M", "simple"}, tls: true, noDirectWhy: "PostgreSQL runs without TLS here"},
		{name: "tpcb", title: "tpcb-like", clients: 50, args: nil, direct: true},
		{name: "connect", title: "connection storm -C select-only (SCRAM)", clients: 50, args: []string{"-S", "-C"}, direct: true},
		{name: "connect-tls", title: "connection storm -C select-only (SCRAM), TLS clients", clients: 50, args: []string{"-S", "-C"}, tls: true, noDirectWhy: "PostgreSQL runs without TLS here"},
		{name: "c1000", title: "1,000 clients select-only", clients: 1000, args: []string{"-S"}, noDirectWhy: noDirect},
		{name: "c10000", title: "10,000 clients select-only", clients: 10000, args: []string{"-S"}, noDirectWhy: noDirect},
	}
	var out []scenario
	for _, s := range all {
		if o.want(s.name) {
			out = append(out, s)
		}
	}
	return out
}

type runResult struct {
	scenario  scenario
	target    string
	round     int    // 0-based, with -rounds
	skipped   string // reason the run did not happen
	err       string // the run happened but produced no result
	processed int64
	tps       float64
	meanMs    float64
	p99Ms     float64
	failed    int64
	aborted   int
	cpuSec    float64 // pooler CPU seconds over the run; NaN for direct
	wall      time.Duration
	connTime  time.Duration // pgbench's "initial connection time"
	window    time.Duration // steady-state window the CPU figure covers
	windowTx  int64         // transactions completed in that window
	note      string
}

// cpuPer1k is pooler CPU seconds per 1,000 transactions.
func (r runResult) cpuPer1k() float64 {
	if math.IsNaN(r.cpuSec) || r.windowTx == 0 {
		return math.NaN()
	}
	return r.cpuSec / float64(r.windowTx) * 1000
}

func (r runResult) ok() bool { return r.skipped == "" && r.err == "" }

func (r runResult) summary() string {
	if r.skipped != "" {
		return "skipped: " + r.skipped
	}
	if r.err != "" {
		return "error: " + r.err
	}
	s := fmt.Sprintf("tps=%.0f mean=%.2fms p99=%.2fms failed=%d aborted=%d", r.tps, r.meanMs, r.p99Ms, r.failed, r.aborted)
	if !math.IsNaN(r.cpuSec) {
		s += fmt.Sprintf(" cpu/1k=%.3fs", r.cpuPer1k())
	}
	return s
}

var (
	reProcessed = regexp.MustCompile(`number of transactions actually processed: (\d+)`)
	reFailed    = regexp.MustCompile(`number of failed transactions: (\d+)`)
	reLatency   = regexp.MustCompile(`latency average = ([\d.]+) ms`)
	reTPS       = regexp.MustCompile(`tps = ([\d.]+)`)
	reAborted   = regexp.MustCompile(`client \d+ (script \d+ )?aborted`)
	reErrLine   = regexp.MustCompile(`(?m)^pgbench: error: (.*)$`)
	reConnTime  = regexp.MustCompile(`(initial|average) connection time = ([\d.]+) ms`)
)

func runPgbench(ctx context.Context, e *env, sc scenario, t *target) runResult {
	r := runResult{scenario: sc, target: t.name, cpuSec: math.NaN()}
	dir, err := os.MkdirTemp(e.tmp, "run-*")
	if err != nil {
		r.err = err.Error()
		return r
	}
	defer os.RemoveAll(dir)

	// pgbench's -T clock includes connecting the clients, one SCRAM login
	// after another per thread; with 1,000+ clients that can outlast the
	// run. Extend -T by the expected connect phase, with half again as
	// much for logins slowed by the burst itself (a run whose connect phase
	// outlasted -T has no transactions), so that every target gets a
	// steady state; TPS excludes the connect phase either way.
	secs := int(e.opts.duration.Seconds())
	if sc.clients >= 500 {
		perLogin := e.loginTime(ctx, t)
		extra := time.Duration(sc.clients/2) * perLogin * 3 / 2
		secs += int(extra.Seconds()) + 2
		logf("  %-9s %-16s one login ≈ %s: -T %d", sc.name, t.name, perLogin.Round(10*time.Microsecond), secs)
	}
	args := []string{"-n", "-c", strconv.Itoa(sc.clients), "-j", "2",
		"-T", strconv.Itoa(secs),
		"-l", "--log-prefix", filepath.Join(dir, "tx")}
	args = append(args, sc.args...)
	cmd := pgbenchCmd(ctx, t.port, args...)
	if sc.tls {
		cmd.Env = append(cmd.Env, "PGSSLMODE=require") // the last setting wins
	}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr

	stopSampling := func() []cpuSample { return nil }
	if t.proc != nil {
		if t.proc.exited() {
			r.err = t.name + " is not running"
			return r
		}
		stopSampling = sampleCPU(t.proc.pid(), 100*time.Millisecond)
	}
	start := time.Now()
	runErr := cmd.Run()
	r.wall = time.Since(start)
	samples := stopSampling()
	if ctx.Err() != nil {
		r.err = "interrupted"
		return r
	}

	out := stdout.String()
	errOut := stderr.String()
	r.aborted = len(reAborted.FindAllString(errOut, -1))
	m := reTPS.FindStringSubmatch(out)
	if m == nil {
		r.err = fmt.Sprintf("pgbench: %v: %s", runErr, firstError(errOut+"\n"+out))
		if t.proc != nil && t.proc.exited() {
			r.err += "; " + t.name + " exited: " + t.proc.logTail(3)
		}
		return r
	}
	r.tps, _ = strconv.ParseFloat(m[1], 64)
	if m := reProcessed.FindStringSubmatch(out); m != nil {
		r.processed, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := reFailed.FindStringSubmatch(out); m != nil {
		r.failed, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := reLatency.FindStringSubmatch(out); m != nil {
		r.meanMs, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := reConnTime.FindStringSubmatch(out); m != nil {
		ms, _ := strconv.ParseFloat(m[2], 64)
		r.connTime = time.Duration(ms * float64(time.Millisecond))
	}
	txlog, err := readTxLogs(dir)
	if err != nil {
		r.note = "transaction log: " + err.Error()
	} else {
		if len(txlog.latUs) > 0 {
			r.p99Ms = float64(percentile(txlog.latUs, 0.99)) / 1000
		}
		if t.proc != nil {
			r.cpuSec, r.window, r.windowTx = steadyCPU(samples, txlog.endUs)
		}
	}
	if r.processed == 0 {
		r.err = fmt.Sprintf("no transaction completed within -T %d s (initial connection time %s)", secs, r.connTime.Round(time.Second))
		return r
	}
	if r.aborted > 0 {
		r.note = fmt.Sprintf("%d of %d clients aborted: %s", r.aborted, sc.clients, firstAbort(errOut))
	}
	return r
}

// firstError is the first "pgbench: error:" line, or the last line of s.
func firstError(s string) string {
	if m := reErrLine.FindStringSubmatch(s); m != nil {
		return truncate(m[1], 160)
	}
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return truncate(s, 160)
}

// firstAbort is the reason given by the first aborted client.
func firstAbort(s string) string {
	for _, line := range strings.Split(s, "\n") {
		if reAborted.MatchString(line) {
			if i := strings.Index(line, "; "); i >= 0 {
				return truncate(strings.TrimSpace(line[i+2:]), 120)
			}
			return truncate(line, 120)
		}
	}
	return ""
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

type txLog struct {
	latUs []int64 // latency of each completed transaction, sorted
	endUs []int64 // completion time of each (Unix µs), sorted
}

// readTxLogs reads pgbench's per-transaction logs (-l) in dir: "client_id
// transaction_no time script_no time_epoch time_us ...", where time is the
// latency in µs (or "failed"/"skipped", ignored) and time_epoch/time_us the
// completion time.
func readTxLogs(dir string) (txLog, error) {
	var l txLog
	files, err := filepath.Glob(filepath.Join(dir, "tx.*"))
	if err != nil {
		return l, err
	}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return l, err
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 6 {
				continue
			}
			lat, err := strconv.ParseInt(fields[2], 10, 64)
			if err != nil {
				continue
			}
			sec, err1 := strconv.ParseInt(fields[4], 10, 64)
			us, err2 := strconv.ParseInt(fields[5], 10, 64)
			if err1 != nil || err2 != nil {
				continue
			}
			l.latUs = append(l.latUs, lat)
			l.endUs = append(l.endUs, sec*1_000_000+us)
		}
		fh.Close()
		if err := sc.Err(); err != nil {
			return l, err
		}
	}
	slices.Sort(l.latUs)
	slices.Sort(l.endUs)
	return l, nil
}

type cpuSample struct {
	at    time.Time
	ticks int64
}

// sampleCPU reads the utime+stime of pid every interval until the returned
// function is called; that function returns the samples.
func sampleCPU(pid int, interval time.Duration) func() []cpuSample {
	stop := make(chan struct{})
	done := make(chan []cpuSample)
	go func() {
		var s []cpuSample
		take := func() {
			if v, err := cpuTicks(pid); err == nil {
				s = append(s, cpuSample{time.Now(), v})
			}
		}
		take()
		tk := time.NewTicker(interval)
		defer tk.Stop()
		for {
			select {
			case <-tk.C:
				take()
			case <-stop:
				take()
				done <- s
				return
			}
		}
	}()
	return func() []cpuSample { close(stop); return <-done }
}

// steadyCPU is the pooler CPU over the steady state of a run: from half a
// second after the first transaction completed (pgbench starts the clients
// only once all are connected, so logins are over) to the last sample
// before the last transaction. It returns CPU seconds, the window and the
// transactions completed inside it.
func steadyCPU(samples []cpuSample, endUs []int64) (float64, time.Duration, int64) {
	if len(samples) < 2 || len(endUs) == 0 {
		return math.NaN(), 0, 0
	}
	first := time.UnixMicro(endUs[0]).Add(500 * time.Millisecond)
	last := time.UnixMicro(endUs[len(endUs)-1])
	i := slices.IndexFunc(samples, func(s cpuSample) bool { return !s.at.Before(first) })
	j := -1
	for k := len(samples) - 1; k >= 0; k-- {
		if !samples[k].at.After(last) {
			j = k
			break
		}
	}
	if i < 0 || j <= i {
		// Too short for a steady window: use the whole run.
		i, j = 0, len(samples)-1
	}
	a, b := samples[i], samples[j]
	lo, _ := slices.BinarySearch(endUs, a.at.UnixMicro())
	hi, _ := slices.BinarySearch(endUs, b.at.UnixMicro()+1)
	return float64(b.ticks-a.ticks) / clkTck, b.at.Sub(a.at), int64(hi - lo)
}

// percentile uses the nearest-rank method on sorted values.
func percentile[T int64 | float64](sorted []T, p float64) T {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}

// loginTime is the wall time of one libpq SCRAM login to t, measured with
// pgbench -C on two clients (as many as the scenarios' threads), cached.
func (e *env) loginTime(ctx context.Context, t *target) time.Duration {
	if d, ok := e.logins[t.name]; ok {
		return d
	}
	d := 10 * time.Millisecond // fallback
	out, err := pgbenchCmd(ctx, t.port, "-n", "-S", "-C", "-c", "2", "-j", "2", "-t", "25").Output()
	if m := reConnTime.FindStringSubmatch(string(out)); err == nil && m != nil {
		if ms, err := strconv.ParseFloat(m[2], 64); err == nil && ms > 0 {
			d = time.Duration(ms * float64(time.Millisecond))
		}
	}
	e.logins[t.name] = d
	return d
}

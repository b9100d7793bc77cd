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
}

func scenarioList(o options) []scenario {
	noDirect := "PostgreSQL max_connections = 300"
	all := []scenario{
		{name: "simple", title: "select-only -M simple", clients: 100, args: []string{"-S", "-M", "simple"}, direct: true},
		{name: "extended", title: "select-only -M extended", clients: 100, args: []string{"-S", "-M", "extended"}, direct: true},
		{name: "prepared", title: "select-only -M prepared", clients: 100, args: []string{"-S", "-M", "prepared"}, direct: true},
		{name: "tpcb", title: "tpcb-like", clients: 50, args: nil, direct: true},
		{name: "connect", title: "connection storm -C select-only (SCRAM)", clients: 50, args: []string{"-S", "-C"}, direct: true},
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
	note      string
}

// cpuPer1k is pooler CPU seconds per 1,000 transactions.
func (r runResult) cpuPer1k() float64 {
	if math.IsNaN(r.cpuSec) || r.processed == 0 {
		return math.NaN()
	}
	return r.cpuSec / float64(r.processed) * 1000
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
)

func runPgbench(ctx context.Context, e *env, sc scenario, t *target) runResult {
	r := runResult{scenario: sc, target: t.name, cpuSec: math.NaN()}
	dir, err := os.MkdirTemp(e.tmp, "run-*")
	if err != nil {
		r.err = err.Error()
		return r
	}
	defer os.RemoveAll(dir)

	args := []string{"-n", "-c", strconv.Itoa(sc.clients), "-j", "2",
		"-T", strconv.Itoa(int(e.opts.duration.Seconds())),
		"-l", "--log-prefix", filepath.Join(dir, "tx")}
	args = append(args, sc.args...)
	cmd := pgbenchCmd(ctx, t.port, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr

	var before int64
	if t.proc != nil {
		if t.proc.exited() {
			r.err = t.name + " is not running"
			return r
		}
		before, _ = cpuTicks(t.proc.pid())
	}
	start := time.Now()
	runErr := cmd.Run()
	r.wall = time.Since(start)
	if t.proc != nil {
		after, err := cpuTicks(t.proc.pid())
		if err == nil {
			r.cpuSec = float64(after-before) / clkTck
		}
	}
	if ctx.Err() != nil {
		r.err = "interrupted"
		return r
	}

	out := stdout.String()
	errOut := stderr.String()
	r.aborted = len(reAborted.FindAllString(errOut, -1))
	m := reTPS.FindStringSubmatch(out)
	if m == nil {
		r.err = fmt.Sprintf("pgbench: %v: %s", runErr, firstError(errOut))
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
	p99, n, err := p99FromLogs(dir)
	if err != nil {
		r.note = "p99: " + err.Error()
	} else if n > 0 {
		r.p99Ms = p99 / 1000
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

// p99FromLogs reads pgbench's per-transaction logs (-l) in dir and returns
// the 99th percentile of the latency column (3rd, microseconds) and the
// number of transactions with a latency. "failed"/"skipped" rows are
// ignored.
func p99FromLogs(dir string) (float64, int, error) {
	files, err := filepath.Glob(filepath.Join(dir, "tx.*"))
	if err != nil {
		return 0, 0, err
	}
	var lat []int64
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return 0, 0, err
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 3 {
				continue
			}
			if v, err := strconv.ParseInt(fields[2], 10, 64); err == nil {
				lat = append(lat, v)
			}
		}
		fh.Close()
		if err := sc.Err(); err != nil {
			return 0, 0, err
		}
	}
	if len(lat) == 0 {
		return 0, 0, nil
	}
	slices.Sort(lat)
	return float64(percentile(lat, 0.99)), len(lat), nil
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

package main

import (
	"cmp"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

type meta struct {
	date, goVersion, cpu, kernel, commit, pgVersion, bouncerVersions string
	cores                                                            int
	load                                                             string
}

type report struct {
	opts     options
	meta     meta
	bouncers []string // the PgBouncer targets' names, in -pgbouncer order
	runs     []runResult
	idle     []idleResult
	latency  []latencyResult
	instr    []instrResult
	kernel   []kernelResult
	notes    []string
	elapsed  time.Duration
}

func collectMeta(root string, e *env) meta {
	m := meta{
		date:      time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		goVersion: runtime.Version(),
		cores:     runtime.NumCPU(),
		pgVersion: e.pgVersion,
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.load = strings.Join(f[:3], " ")
		}
	}
	if e.opts.rev != "" {
		m.commit = e.ferrySource
	} else if out, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.commit = strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
			m.commit += " + uncommitted changes (working tree)"
		}
	}
	var versions []string
	for _, b := range e.bouncers {
		versions = append(versions, fmt.Sprintf("PgBouncer %s (%s)", b.version, b.path))
	}
	m.bouncerVersions = strings.Join(versions, ", ")
	return m
}

func (r *report) markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	o := r.opts
	mode := "full"
	if o.quick {
		mode = "quick"
	}
	p("# pgferry vs PgBouncer: ferrybench\n\n")
	p("- Date: %s; mode: %s (%s per pgbench run, pgbench scale %d); total %s\n", r.meta.date, mode, o.duration, o.scale, r.elapsed.Round(time.Second))
	p("- Machine: %s, %d cores, Linux %s; load average at start %s\n", r.meta.cpu, r.meta.cores, r.meta.kernel, r.meta.load)
	p("- %s; pgferry built from %s; %s; PostgreSQL %s; RLIMIT_NOFILE %d\n", r.meta.goVersion, r.meta.commit, r.meta.bouncerVersions, r.meta.pgVersion, nofile)
	p("- Shared ini: auth_type = scram-sha-256, pool_mode = transaction, default_pool_size = 20, max_client_conn = 12000\n\n")

	if len(r.runs) > 0 {
		p("## Throughput (pgbench, -j 2)\n\n")
		if o.rounds > 1 {
			p("Each scenario ran %d rounds, the targets taking turns; each row is the round with the median TPS (TPS range over the rounds in brackets), and the CPU column is the median over the rounds.\n\n", o.rounds)
		}
		p("| scenario | clients | target | TPS | mean ms | p99 ms | failed tx | aborted clients | pooler CPU s / 1k tx |\n")
		p("|---|---:|---|---:|---:|---:|---:|---:|---:|\n")
		for _, sc := range scenarioList(o) {
			for _, target := range append([]string{"direct", "pgferry"}, r.bouncers...) {
				runs := r.all(sc.name, target)
				if len(runs) == 0 {
					continue
				}
				x, ok := median(runs)
				switch {
				case runs[0].skipped != "":
					p("| %s | %d | %s | n/a | | | | | |\n", sc.title, sc.clients, target)
				case !ok:
					p("| %s | %d | %s | n/a (error) | | | | | |\n", sc.title, sc.clients, target)
				default:
					tps := fmt.Sprintf("%.0f", x.tps)
					if lo, hi := tpsRange(runs); len(runs) > 1 {
						tps += fmt.Sprintf(" [%.0f–%.0f]", lo, hi)
					}
					p("| %s | %d | %s | %s | %.2f | %.2f | %d | %d | %s |\n", sc.title, sc.clients, target,
						tps, x.meanMs, x.p99Ms, x.failed, x.aborted, fnum(medianCPU(runs), 3))
				}
			}
		}
		p("\n")
		p("### Ratios\n\n")
		p("| scenario |")
		for _, b := range r.bouncers {
			p(" TPS pgferry / %s |", b)
		}
		for _, b := range r.bouncers {
			p(" CPU per 1k tx pgferry / %s |", b)
		}
		p(" TPS pgferry / direct |")
		cols := 2*len(r.bouncers) + 1
		if o.rounds > 1 {
			for _, b := range r.bouncers {
				p(" TPS pgferry / %s, each round |", b)
			}
		}
		p("\n|---|%s", strings.Repeat("---:|", cols))
		if o.rounds > 1 {
			p("%s", strings.Repeat("---|", len(r.bouncers)))
		}
		p("\n")
		for _, sc := range scenarioList(o) {
			fr := r.all(sc.name, "pgferry")
			var tps, cpu, each []string
			for _, b := range r.bouncers {
				t, c, e := vsBouncer(fr, r.all(sc.name, b), sc.clients)
				tps, cpu, each = append(tps, t), append(cpu, c), append(each, e)
			}
			f, fok := median(fr)
			d, dok := median(r.all(sc.name, "direct"))
			tpsFD := "n/a"
			if fok && dok {
				tpsFD = ratio(f.tps, d.tps)
			}
			p("| %s | %s | %s | %s |", sc.title, strings.Join(tps, " | "), strings.Join(cpu, " | "), tpsFD)
			if o.rounds > 1 {
				p(" %s |", strings.Join(each, " | "))
			}
			p("\n")
		}
		p("\n")
	}

	if len(r.idle) > 0 {
		p("## Idle clients: pooler memory (VmRSS)\n\n")
		p("Each client does a full SCRAM login and then stays idle; logins run %d at a time, and RSS is read once the clients have been idle for %s. ", idleConcurrency, idleSettle)
		p("Plain and TLS clients are measured the same way, each on freshly started poolers.\n\n")
		for _, kind := range []struct{ scenario, title string }{
			{idlePlain.scenario, "Plain clients"},
			{idleTLS.scenario, "TLS clients (" + tlsLabel + ")"},
		} {
			if xs := r.idleOf(kind.scenario); len(xs) > 0 {
				p("### %s (`%s`)\n\n", kind.title, kind.scenario)
				r.idleTable(p, xs)
			}
		}
	}

	if len(r.latency) > 0 {
		p("## Added latency: one client, `select 1`, pgx simple protocol, 2,000 iterations\n\n")
		p("| target | p50 µs | p99 µs | p50 added vs direct µs |\n|---|---:|---:|---:|\n")
		var direct *latencyResult
		for i := range r.latency {
			if r.latency[i].target == "direct" && r.latency[i].err == "" {
				direct = &r.latency[i]
			}
		}
		for _, x := range r.latency {
			if x.err != "" {
				p("| %s | n/a | n/a | n/a |\n", x.target)
				continue
			}
			add := "—"
			if direct != nil && x.target != "direct" {
				add = fmt.Sprintf("%+.0f", x.p50-direct.p50)
			}
			p("| %s | %.0f | %.0f | %s |\n", x.target, x.p50, x.p99, add)
		}
		p("\n")
		r.ratioTable(p, []string{"p50", "p99", "p50 added vs direct"}, func(i int, target string) float64 {
			for _, x := range r.latency {
				if x.target == target && x.err == "" {
					switch {
					case i == 0:
						return x.p50
					case i == 1:
						return x.p99
					case direct != nil:
						return x.p50 - direct.p50
					}
				}
			}
			return math.NaN()
		})
	}

	if len(r.kernel) > 0 {
		p("## System calls and context switches per transaction\n\n")
		p("`pgbench -n -S -c %d -j 2` for %s against each pooler; system calls counted by `perf stat` on the syscall tracepoints, ", kernelClients, o.duration)
		p("context switches summed over the pooler's threads from /proc (voluntary: the pooler waited; involuntary: the kernel preempted it), ")
		p("CPU from /proc. Every column covers the whole run, the %d logins included, divided by its transactions.\n\n", kernelClients)
		var names []string
		for _, x := range r.kernel {
			for _, c := range x.syscalls {
				if !slices.Contains(names, c.part) {
					names = append(names, c.part)
				}
			}
		}
		p("| pooler | CPU µs / tx | voluntary switches / tx | involuntary switches / tx |")
		for _, n := range names {
			if n == "all" {
				p(" system calls / tx |")
			} else {
				p(" %s |", n)
			}
		}
		p("\n|---|---:|---:|---:|%s\n", strings.Repeat("---:|", len(names)))
		for _, x := range r.kernel {
			if x.err != "" {
				p("| %s | n/a | n/a | n/a |%s\n", x.target, strings.Repeat(" |", len(names)))
				continue
			}
			p("| %s | %.1f | %.3f | %.3f |", x.target, x.cpuUS, x.voluntary, x.involuntary)
			for _, n := range names {
				v := 0.0
				for _, c := range x.syscalls {
					if c.part == n {
						v = c.perTx
					}
				}
				if len(x.syscalls) == 0 {
					p(" n/a |")
				} else {
					p(" %.2f |", v)
				}
			}
			p("\n")
		}
		p("\n")
		r.ratioTable(p, []string{"CPU µs / tx", "system calls / tx"}, func(i int, target string) float64 {
			for _, x := range r.kernel {
				if x.target == target && x.err == "" {
					if i == 0 {
						return x.cpuUS
					}
					if len(x.syscalls) > 0 {
						return x.syscalls[0].perTx // "all"
					}
				}
			}
			return math.NaN()
		})
	}

	if len(r.instr) > 0 {
		p("## Instructions per transaction (valgrind --tool=callgrind)\n\n")
		p("One pooler process under callgrind: a warm-up run, counters zeroed, then `pgbench -n -c 4 -j 1 %s -t 200` and `-t 2000`, ", strings.Join(instrWorkloads[o.instrWorkload], " "))
		p("each followed by `callgrind_control --dump`; instructions/tx = (Ir(2000) - Ir(200)) / (4 × 1800), so logins cancel out; the median of three such pairs. ")
		p("pgferry runs with GODEBUG=%s (callgrind cannot take Go's preemption signals, nor decode RDTSCP).\n\n", ferryGODEBUG(o.godebug, "asyncpreemptoff=1,cpu.rdtscp=off"))
		var tx, login []instrRow
		for _, x := range r.instr {
			tx = append(tx, instrRow{x.target, x.skipped == "", x.perTx, x.base, x.full, x.parts})
			login = append(login, instrRow{x.target, x.skipped == "" && x.loginErr == "", x.perLogin, x.loginBase, x.loginFull, x.loginParts})
		}
		instrTable(p, "tx", "-t 200", "-t 2000", tx, func(target string) string {
			by := "shared object"
			if target == "pgferry" {
				by = "Go package"
			}
			return fmt.Sprintf("Where %s's instructions per transaction go (self cost by %s, same difference of the two runs)", target, by)
		})

		p("### Instructions per login\n\n")
		p("The same pooler processes, after the runs above: `pgbench -n -S -C -c 4 -j 1 -t 50` and `-t 250` (a SCRAM login per transaction), ")
		p("each followed by `callgrind_control --dump`; instructions/login = (Ir(250) - Ir(50)) / (4 × 200), the median of three such pairs. User space only: ")
		p("the kernel's share of a login (accept, socket calls, wake-ups) is in the connection storm's CPU column.\n\n")
		instrTable(p, "login", "-t 50 -C", "-t 250 -C", login, func(target string) string {
			return fmt.Sprintf("Where %s's instructions per login go", target)
		})

		p("### Instructions: pgferry against each PgBouncer\n\n")
		r.ratioTable(p, []string{"instructions / transaction", "instructions / login"}, func(i int, target string) float64 {
			rows := [][]instrRow{tx, login}[i]
			for _, x := range rows {
				if x.target == target && x.ok {
					return x.per
				}
			}
			return math.NaN()
		})
	}

	notes := append([]string{}, r.notes...)
	notes = append(notes,
		"Latencies are client-side (pgbench); p99 is computed from pgbench's per-transaction log (-l).",
		"Pooler CPU is utime+stime from /proc/<pid>/stat, sampled every 100 ms and taken over the steady state (from 0.5 s after the first transaction, when all clients are logged in, to the last one) divided by the transactions pgbench logged in that window; with -C every transaction includes its login. Direct has no pooler.",
		"The machine is shared with other work: absolute figures are noisy; compare ratios from the same run.",
	)
	for _, x := range r.runs {
		name := x.target
		if o.rounds > 1 {
			name = fmt.Sprintf("%s (round %d)", x.target, x.round+1)
		}
		switch {
		case x.skipped != "":
			notes = append(notes, fmt.Sprintf("%s, %s: skipped (%s).", x.scenario.title, x.target, x.skipped))
		case x.err != "":
			notes = append(notes, fmt.Sprintf("%s, %s: n/a, %s.", x.scenario.title, name, x.err))
		case x.note != "":
			notes = append(notes, fmt.Sprintf("%s, %s: %s (reported as failed).", x.scenario.title, name, x.note))
		}
		if x.ok() && x.scenario.clients >= 500 {
			notes = append(notes, fmt.Sprintf("%s, %s: pgbench's initial connection time %s (libpq SCRAM logins, -T extended to cover them); CPU window %s with %d tx.",
				x.scenario.title, name, x.connTime.Round(100*time.Millisecond), x.window.Round(100*time.Millisecond), x.windowTx))
		}
	}
	if tls := r.idleOf(idleTLS.scenario); len(tls) > 0 {
		var got []string
		for _, x := range tls {
			if x.tls != "" {
				got = append(got, fmt.Sprintf("%s %s", x.target, x.tls))
			}
		}
		notes = append(notes, fmt.Sprintf("idle-tls: each client sends SSLRequest, gets 'S', completes a TLS handshake (Go crypto/tls, TLS 1.3 required, the throwaway ECDSA P-256 certificate not verified) and then makes the same SCRAM login as in idle (SCRAM-SHA-256, no channel binding) over the TLS connection, which it holds idle. Negotiated: %s.", strings.Join(got, "; ")))
	}
	for _, x := range r.idle {
		if x.err != "" {
			notes = append(notes, fmt.Sprintf("%s memory, %s: %s.", x.scenario, x.target, x.err))
		}
	}
	for _, x := range r.latency {
		if x.err != "" {
			notes = append(notes, fmt.Sprintf("latency, %s: %s.", x.target, x.err))
		}
	}
	for _, x := range r.instr {
		if x.skipped != "" {
			notes = append(notes, fmt.Sprintf("instructions, %s: skipped (%s).", x.target, x.skipped))
		} else if x.loginErr != "" {
			notes = append(notes, fmt.Sprintf("instructions per login, %s: n/a (%s).", x.target, x.loginErr))
		}
	}
	for _, x := range r.kernel {
		switch {
		case x.err != "":
			notes = append(notes, fmt.Sprintf("system calls, %s: n/a, %s.", x.target, x.err))
		case x.note != "":
			notes = append(notes, fmt.Sprintf("system calls, %s: not counted (%s).", x.target, x.note))
		}
	}
	if !o.want("instructions") {
		notes = append(notes, "Instruction counts (callgrind) not run in this mode; run without -quick or with -scenarios instructions.")
	}
	p("## Notes\n\n")
	for _, n := range notes {
		p("- %s\n", n)
	}
	return b.String()
}

// all returns the runs of one scenario and target, in round order.
func (r *report) all(scenario, target string) []runResult {
	var out []runResult
	for _, x := range r.runs {
		if x.scenario.name == scenario && x.target == target {
			out = append(out, x)
		}
	}
	return out
}

// median returns the successful run with the median TPS (the lower of the
// two middle ones for an even count).
func median(runs []runResult) (runResult, bool) {
	var good []runResult
	for _, x := range runs {
		if x.ok() {
			good = append(good, x)
		}
	}
	if len(good) == 0 {
		return runResult{}, false
	}
	slices.SortFunc(good, func(a, b runResult) int { return cmp.Compare(a.tps, b.tps) })
	return good[(len(good)-1)/2], true
}

// medianCPU is the median pooler CPU per 1k transactions of the
// successful runs; NaN when none has a figure.
func medianCPU(runs []runResult) float64 {
	var v []float64
	for _, x := range runs {
		if c := x.cpuPer1k(); x.ok() && !math.IsNaN(c) {
			v = append(v, c)
		}
	}
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	return v[(len(v)-1)/2]
}

// tpsRange is the lowest and highest TPS of the successful runs.
func tpsRange(runs []runResult) (lo, hi float64) {
	lo = math.Inf(1)
	for _, x := range runs {
		if x.ok() {
			lo, hi = min(lo, x.tps), max(hi, x.tps)
		}
	}
	return lo, hi
}

// vsBouncer compares pgferry's runs of a scenario with one PgBouncer's:
// TPS and CPU per 1k tx as ratios of the medians, and the TPS ratio of each
// round. Where that PgBouncer's clients aborted, the survivors' throughput is
// not comparable.
func vsBouncer(fr, br []runResult, clients int) (tps, cpu, each string) {
	f, fok := median(fr)
	b, bok := median(br)
	switch {
	case bok && b.aborted > 0:
		return fmt.Sprintf("n/a (%d of %d clients aborted)", b.aborted, clients), "n/a", "n/a"
	case !fok || !bok:
		return "n/a", "n/a", "n/a"
	}
	var per []string
	for i := range min(len(fr), len(br)) {
		if fr[i].ok() && br[i].ok() {
			per = append(per, ratio(fr[i].tps, br[i].tps))
		}
	}
	return ratio(f.tps, b.tps), ratio(medianCPU(fr), medianCPU(br)), strings.Join(per, ", ")
}

// ratioTable prints one row per measure and one column per PgBouncer:
// pgferry's value divided by that PgBouncer's. value(i, target) is the
// value of measures[i]; NaN where there is none.
func (r *report) ratioTable(p func(string, ...any), measures []string, value func(i int, target string) float64) {
	p("| measure |")
	for _, b := range r.bouncers {
		p(" pgferry / %s |", b)
	}
	p("\n|---|%s\n", strings.Repeat("---:|", len(r.bouncers)))
	for i, m := range measures {
		p("| %s |", m)
		for _, b := range r.bouncers {
			p(" %s |", ratio(value(i, "pgferry"), value(i, b)))
		}
		p("\n")
	}
	p("\n")
}

// ratio is a/b to two decimals, or n/a unless both are positive.
func ratio(a, b float64) string {
	if !(a > 0 && b > 0) {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", a/b)
}

func fnum(v float64, prec int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "—"
	}
	return fmt.Sprintf("%.*f", prec, v)
}

// moduleRoot is the directory of the pgferry go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("go list -m (run from inside the pgferry module): %w", err)
	}
	dir := strings.TrimSpace(string(out))
	if _, err := os.Stat(dir + "/cmd/pgferry"); err != nil {
		return "", fmt.Errorf("%s has no cmd/pgferry: run from the pgferry repository", dir)
	}
	return dir, nil
}

// instrRow is one pooler's instructions per unit (transaction or login)
// from two callgrind dumps.
type instrRow struct {
	target     string
	ok         bool
	per        float64
	base, full int64
	parts      []costShare
}

// instrTable prints the instructions per unit of each pooler and each
// pooler's breakdown under where(target).
func instrTable(p func(string, ...any), unit, shortRun, longRun string, rows []instrRow, where func(target string) string) {
	p("| pooler | instructions / %s | Ir, %s run | Ir, %s run |\n|---|---:|---:|---:|\n", unit, shortRun, longRun)
	for _, x := range rows {
		if !x.ok {
			p("| %s | n/a | | |\n", x.target)
			continue
		}
		p("| %s | %.0f | %d | %d |\n", x.target, x.per, x.base, x.full)
	}
	p("\n")
	for _, x := range rows {
		if !x.ok || len(x.parts) == 0 {
			continue
		}
		p("%s:\n\n", where(x.target))
		p("| part | instructions / %s | share |\n|---|---:|---:|\n", unit)
		for _, c := range x.parts {
			p("| %s | %.0f | %.0f%% |\n", c.part, c.perTx, 100*c.perTx/x.per)
		}
		p("\n")
	}
}

// idleOf returns the idle-memory results of one scenario ("idle" or
// "idle-tls"), in the order they ran.
func (r *report) idleOf(scenario string) []idleResult {
	var out []idleResult
	for _, x := range r.idle {
		if x.scenario == scenario {
			out = append(out, x)
		}
	}
	return out
}

// idleTable prints the RSS of each pooler before and at each step of
// o.idleSteps, bytes per client, and pgferry's ratios to each PgBouncer.
func (r *report) idleTable(p func(string, ...any), xs []idleResult) {
	steps := r.opts.idleSteps
	p("| pooler | RSS before |")
	for _, n := range steps {
		p(" RSS @ %d | bytes / client @ %d |", n, n)
	}
	p("\n|---|---:|")
	for range steps {
		p("---:|---:|")
	}
	p("\n")
	for _, x := range xs {
		p("| %s | %s |", x.target, mib(x.rssBefore))
		for i := range steps {
			if i < len(x.steps) {
				s := x.steps[i]
				cell := mib(s.rss)
				if s.failed > 0 {
					cell += fmt.Sprintf(" (%d clients, %d failed)", s.clients, s.failed)
				}
				p(" %s | %.0f |", cell, x.bytesPerClient(s))
			} else {
				p(" n/a | n/a |")
			}
		}
		p("\n")
	}
	p("\n")
	var measures []string
	for _, n := range steps {
		measures = append(measures, fmt.Sprintf("RSS @ %d", n), fmt.Sprintf("bytes / client @ %d", n))
	}
	r.ratioTable(p, measures, func(i int, target string) float64 {
		for _, x := range xs {
			if x.target == target && x.err == "" && i/2 < len(x.steps) {
				s := x.steps[i/2]
				if i%2 == 0 {
					return float64(s.rss)
				}
				return x.bytesPerClient(s)
			}
		}
		return math.NaN()
	})
}

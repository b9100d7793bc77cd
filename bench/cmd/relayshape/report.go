//go:build linux

package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// baseline is the shape the ratios are relative to: pgferry's today.
const baseline = "inline"

// median of the values that are not NaN; NaN if none are.
func median(vs []float64) float64 {
	vs = slices.DeleteFunc(slices.Clone(vs), math.IsNaN)
	if len(vs) == 0 {
		return math.NaN()
	}
	slices.Sort(vs)
	if len(vs)%2 == 1 {
		return vs[len(vs)/2]
	}
	return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
}

// col is the median of one metric over a target's rounds.
func col(rs []result, f func(result) float64) float64 {
	var vs []float64
	for _, r := range rs {
		vs = append(vs, f(r))
	}
	return median(vs)
}

func printTables(targets []string, results map[string][]result, rounds int) {
	p := func(format string, args ...any) { fmt.Printf(format, args...) }
	cell := func(v, base float64, format string) string {
		if math.Abs(v) < 0.5 && format == "%.0f" {
			v = 0 // no "-0" from a difference of two dumps
		}
		switch {
		case math.IsNaN(v):
			return "–"
		case math.IsNaN(base) || math.Abs(base) < 10 && format == "%.0f" || math.Abs(base) < 0.05:
			return fmt.Sprintf(format, v) // a ratio to next to nothing means nothing
		}
		return fmt.Sprintf(format+" (%.2f×)", v, v/base)
	}
	type metric struct {
		title  string
		format string
		get    func(result) float64
	}
	metrics := []metric{{"instr/tx", "%.0f", func(r result) float64 { return r.instr }}}
	for i, c := range clientCounts {
		metrics = append(metrics,
			metric{fmt.Sprintf("TPS c%d", c), "%.0f", func(r result) float64 { return r.tps[i] }},
			metric{fmt.Sprintf("CPU ms/1k tx c%d", c), "%.0f", func(r result) float64 { return r.cpuMs[i] }})
	}
	table := func(metrics []metric) {
		p("| shape |")
		for _, m := range metrics {
			p(" %s |", m.title)
		}
		p("\n|---|%s\n", strings.Repeat("---:|", len(metrics)))
		for _, t := range targets {
			p("| %s |", t)
			for _, m := range metrics {
				p(" %s |", cell(col(results[t], m.get), col(results[baseline], m.get), m.format))
			}
			p("\n")
		}
	}
	p("\nMedians of %d rounds (the c1000 columns: of the rounds that ran them); ratios to `%s` (goroutine per session, pgferry's shape today).\n\n", rounds, baseline)
	table(metrics)

	var more []metric
	for i, c := range clientCounts {
		more = append(more,
			metric{fmt.Sprintf("user CPU ms/1k tx c%d", c), "%.1f", func(r result) float64 { return r.userMs[i] }},
			metric{fmt.Sprintf("ctx switches/tx c%d", c), "%.2f", func(r result) float64 { return r.csPerTx[i] }},
			metric{fmt.Sprintf("threads c%d", c), "%.0f", func(r result) float64 { return r.threads[i] }})
	}
	p("\nThe user-space part of the relay's CPU, its context switches (all threads, /proc/PID/task/*/status) per transaction, and its threads at the end of the run.\n\n")
	table(more)

	waits := []metric{{"runtime.netpoll calls/tx c4 (callgrind)", "%.2f", func(r result) float64 { return r.netpoll }}}
	for i, c := range clientCounts {
		for k, title := range []string{"netpoll blocking waits/tx", "netpoll epoll_pwait/tx", "loop epoll_wait/tx"} {
			waits = append(waits, metric{fmt.Sprintf("%s c%d", title, c), "%.2f", func(r result) float64 { return r.waits[i][k] }})
		}
	}
	p("\nGo's netpoller per transaction: calls to runtime.netpoll under callgrind (pgbench -c 4), and the relay's epoll waits (perf stat): the netpoller blocking a thread in epoll_pwait (each ends in a wake-up), all of its epoll_pwait calls, and the event loops' epoll_wait.\n\n")
	table(waits)

	var split []metric
	for _, part := range parts {
		split = append(split, metric{part, "%.0f", func(r result) float64 {
			if r.parts == nil {
				return math.NaN()
			}
			return r.parts[part]
		}})
	}
	p("\nInstructions per transaction by part (callgrind self cost; `rt` is the Go runtime: `syscall enter/exit` its functions named *syscall* (entersyscall, exitsyscall and kin), `sysmon, P handoff` sysmon, retake, handoffp and the locked-thread bookkeeping). Each part is its own median, so the parts need not add up to the instr/tx median.\n\n")
	table(split)
}

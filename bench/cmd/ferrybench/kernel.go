package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// kernelResult is what one pooler asks of the kernel per transaction under
// the select-only load: system calls (by perf stat's syscall tracepoints)
// and context switches (from /proc), which the profile names as the cause
// of pgferry's extra CPU.
type kernelResult struct {
	target      string
	tx          int64
	syscalls    []costShare // per tx by name, largest first; "all" first
	voluntary   float64     // context switches per tx: the pooler waited
	involuntary float64     // the kernel took the CPU away
	cpuUS       float64     // pooler CPU µs per tx over the whole run
	note        string      // why system calls are missing
	err         string
}

// Syscalls counted by name; the total counts every one.
var kernelSyscalls = []string{"read", "recvfrom", "sendto", "write", "epoll_wait", "epoll_pwait", "epoll_ctl", "futex", "nanosleep"}

// kernelClients is the kernel probe's client count, as in the connection
// storm and tpcb scenarios.
const kernelClients = 50

// kernelProbe runs pgbench -S against t for d while perf stat counts the
// pooler's system calls.
func kernelProbe(ctx context.Context, e *env, t *target, d time.Duration) kernelResult {
	r := kernelResult{target: t.name}
	if t.proc == nil || t.proc.exited() {
		r.err = "the pooler is not running"
		return r
	}
	pid := t.proc.pid()
	var perf *exec.Cmd
	var perfErr bytes.Buffer
	perfOut := filepath.Join(e.tmp, "perf-stat."+fileName(t.name))
	events := tracepoints()
	switch _, err := exec.LookPath("perf"); {
	case err != nil:
		r.note = "perf not installed"
	case len(events) == 0:
		r.note = "no syscall tracepoints under /sys/kernel/tracing"
	default:
		perf = exec.CommandContext(ctx, "perf", "stat", "-x", ",", "-e", strings.Join(events, ","),
			"-p", strconv.Itoa(pid), "-o", perfOut)
		perf.Stderr = &perfErr
		perf.WaitDelay = 5 * time.Second
		if err := perf.Start(); err != nil {
			r.note = "perf stat: " + err.Error()
			perf = nil
			break
		}
		time.Sleep(300 * time.Millisecond) // attached before the load starts
	}
	stopPerf := func() {
		if perf != nil {
			_ = perf.Process.Signal(os.Interrupt)
			if err := perf.Wait(); err != nil && r.note == "" && perfErr.Len() > 0 {
				r.note = "perf stat: " + truncate(strings.TrimSpace(perfErr.String()), 200)
			}
			perf = nil
		}
	}
	defer stopPerf()
	v0, n0, err1 := ctxSwitches(pid)
	c0, err2 := cpuTicks(pid)
	if err := firstNonNil(err1, err2); err != nil {
		r.err = err.Error()
		return r
	}
	secs := strconv.Itoa(max(1, int(d.Seconds())))
	out, err := pgbenchCmd(ctx, t.port, "-n", "-S", "-c", strconv.Itoa(kernelClients), "-j", "2", "-T", secs).CombinedOutput()
	v1, n1, err1 := ctxSwitches(pid)
	c1, err2 := cpuTicks(pid)
	stopPerf()
	if err != nil {
		r.err = "pgbench: " + firstError(string(out))
		return r
	}
	if err := firstNonNil(err1, err2); err != nil {
		r.err = err.Error()
		return r
	}
	m := reProcessed.FindSubmatch(out)
	if m == nil {
		r.err = "pgbench printed no transaction count"
		return r
	}
	r.tx, _ = strconv.ParseInt(string(m[1]), 10, 64)
	if r.tx == 0 {
		r.err = "no transactions"
		return r
	}
	tx := float64(r.tx)
	r.voluntary, r.involuntary = float64(v1-v0)/tx, float64(n1-n0)/tx
	r.cpuUS = float64(c1-c0) / clkTck * 1e6 / tx
	if r.note == "" {
		counts, err := readPerfStat(perfOut)
		switch {
		case err != nil:
			r.note = err.Error()
		case counts["raw_syscalls:sys_enter"] == 0:
			r.note = "perf counted no system calls"
			if perfErr.Len() > 0 {
				r.note += ": " + truncate(strings.TrimSpace(perfErr.String()), 200)
			}
		default:
			r.syscalls = append(r.syscalls, costShare{part: "all", perTx: counts["raw_syscalls:sys_enter"] / tx})
			for _, s := range kernelSyscalls {
				if v := counts["syscalls:sys_enter_"+s] / tx; v >= 0.005 {
					r.syscalls = append(r.syscalls, costShare{part: s, perTx: v})
				}
			}
		}
	}
	logf("  kernel    %-16s %d tx, %.2f syscalls/tx, %.2f+%.2f context switches/tx", t.name, r.tx,
		firstShare(r.syscalls), r.voluntary, r.involuntary)
	return r
}

// tracepoints lists the perf events of the probe that this kernel has:
// one missing event would make perf stat refuse them all.
func tracepoints() []string {
	var dir string
	for _, d := range []string{"/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"} {
		if _, err := os.Stat(filepath.Join(d, "raw_syscalls", "sys_enter")); err == nil {
			dir = d
			break
		}
	}
	if dir == "" {
		return nil
	}
	events := []string{"raw_syscalls:sys_enter"}
	for _, s := range kernelSyscalls {
		if _, err := os.Stat(filepath.Join(dir, "syscalls", "sys_enter_"+s)); err == nil {
			events = append(events, "syscalls:sys_enter_"+s)
		}
	}
	return events
}

func firstNonNil(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func firstShare(s []costShare) float64 {
	if len(s) == 0 {
		return 0
	}
	return s[0].perTx
}

// readPerfStat reads perf stat -x, output: count,unit,event,...
func readPerfStat(path string) (map[string]float64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("perf stat output: %w", err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ",")
		if len(f) < 3 || strings.HasPrefix(line, "#") {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue // "<not counted>", "<not supported>"
		}
		out[f[2]] = v
	}
	return out, nil
}

// ctxSwitches sums the voluntary and involuntary context switches of all
// of pid's threads.
func ctxSwitches(pid int) (vol, invol int64, err error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		if err != nil {
			continue // the thread ended
		}
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			switch k {
			case "voluntary_ctxt_switches":
				vol += n
			case "nonvoluntary_ctxt_switches":
				invol += n
			}
		}
	}
	return vol, invol, nil
}

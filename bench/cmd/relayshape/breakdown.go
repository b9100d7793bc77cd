//go:build linux

package main

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Copied, trimmed, from bench/cmd/ferrybench/breakdown.go and probes.go
// (package main there too, so it cannot be imported).

// parts are the buckets of the per-transaction instruction breakdown.
var parts = []string{"relay (main)", "poll, net, syscall, bufio", "rt syscall enter/exit", "rt sysmon, P handoff",
	"rt netpoll", "rt locks, futex", "rt scheduler, other", "other"}

// handoff are the runtime functions by which sysmon takes the P of a
// thread blocked in a system call and hands it on (proc.go).
var handoff = map[string]bool{"runtime.sysmon": true, "runtime.retake": true, "runtime.handoffp": true,
	"runtime.setBlockOnExitSyscall": true, "runtime.incidlelocked": true, "runtime.checkdead": true,
	"runtime.startm": true, "runtime.stoplockedm": true, "runtime.startlockedm": true, "runtime.usleep": true}

// goPart names the part of the relay binary a function belongs to.
func goPart(fn string) string {
	fn, _, _ = strings.Cut(fn, "'") // callgrind's recursion suffix
	switch {
	case strings.HasPrefix(fn, "main."):
		return "relay (main)"
	case strings.HasPrefix(fn, "internal/poll."), strings.HasPrefix(fn, "net."), strings.HasPrefix(fn, "os."),
		strings.HasPrefix(fn, "syscall."), strings.HasPrefix(fn, "internal/runtime/syscall"), strings.HasPrefix(fn, "bufio."):
		return "poll, net, syscall, bufio"
	case handoff[fn]:
		return "rt sysmon, P handoff"
	case strings.HasPrefix(fn, "runtime.") && strings.Contains(fn, "syscall"):
		return "rt syscall enter/exit"
	case strings.HasPrefix(fn, "runtime.") && strings.Contains(fn, "netpoll"):
		return "rt netpoll"
	case fn == "runtime.lock2", fn == "runtime.unlock2", strings.HasPrefix(fn, "runtime.futex"),
		strings.HasPrefix(fn, "runtime.note"), strings.HasPrefix(fn, "runtime.sema"):
		return "rt locks, futex"
	case strings.HasPrefix(fn, "runtime."), strings.HasPrefix(fn, "internal/runtime/"),
		strings.HasPrefix(fn, "gogo"), strings.HasPrefix(fn, "gosave"), strings.HasPrefix(fn, "runtime/"):
		return "rt scheduler, other"
	}
	return "other"
}

// callgrindSelf sums a callgrind output file's self cost (Ir) by goPart.
// Costs on "calls=" lines are the callee's inclusive cost and are skipped.
// It also counts the calls to runtime.netpoll, by any caller.
func callgrindSelf(path string) (_ map[string]int64, netpollCalls int64, _ error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("callgrind output: %w", err)
	}
	defer f.Close()
	fns := map[string]string{}
	var fn, cfn string
	skipNext := false
	out := map[string]int64{}
	npos, ir := 1, 0
	// name resolves callgrind's name compression: "(id) name" defines id,
	// "(id)" refers back to it.
	name := func(v string) string {
		if !strings.HasPrefix(v, "(") {
			return v
		}
		id, rest, _ := strings.Cut(v, ")")
		if rest = strings.TrimSpace(rest); rest != "" {
			fns[id] = rest
			return rest
		}
		return fns[id]
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			continue
		case strings.HasPrefix(line, "positions:"):
			npos = len(strings.Fields(line[len("positions:"):]))
			continue
		case strings.HasPrefix(line, "events:"):
			if ir = slices.Index(strings.Fields(line[len("events:"):]), "Ir"); ir < 0 {
				return nil, 0, fmt.Errorf("%s: no Ir event", path)
			}
			continue
		case strings.HasPrefix(line, "fn="):
			fn = name(line[3:])
			continue
		case strings.HasPrefix(line, "cfn="):
			cfn = name(line[4:])
			continue
		case strings.HasPrefix(line, "calls="):
			skipNext = true
			if cfn == "runtime.netpoll" {
				n, _ := strconv.ParseInt(strings.Fields(line[len("calls="):])[0], 10, 64)
				netpollCalls += n
			}
			continue
		}
		if c := line[0]; !(c >= '0' && c <= '9' || c == '+' || c == '-' || c == '*') {
			continue
		}
		if skipNext {
			skipNext = false
			continue
		}
		fields := strings.Fields(line)
		if len(fields) <= npos+ir {
			continue
		}
		if v, err := strconv.ParseInt(fields[npos+ir], 10, 64); err == nil {
			out[goPart(fn)] += v
		}
	}
	return out, netpollCalls, sc.Err()
}

// callgrindTotal reads the "summary:" (or "totals:") Ir count of a callgrind
// output file.
func callgrindTotal(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("callgrind output: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var total int64 = -1
	for sc.Scan() {
		for _, p := range []string{"summary:", "totals:"} {
			if rest, ok := strings.CutPrefix(sc.Text(), p); ok {
				if f := strings.Fields(rest); len(f) > 0 {
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

//go:build linux

package main

import (
	"bufio"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// waitEvents are the system calls counted by perfWaits, in perf's -e
// order. Go's runtime netpoller waits in epoll_pwait (timeout 0 when it
// only looks, non-zero when a thread blocks in it until a descriptor it
// registered is ready); the event loops wait in epoll_wait
// (syscall.EpollWait).
var waitEvents = [...]struct {
	event, filter string
}{
	{"syscalls:sys_enter_epoll_pwait", "timeout != 0"},
	{"syscalls:sys_enter_epoll_pwait", ""},
	{"syscalls:sys_enter_epoll_wait", ""},
}

// waitCounts are the counts of waitEvents in one perf interval, which
// ended at at (from perf's start).
type waitCounts struct {
	at     time.Duration
	counts [len(waitEvents)]int64
}

// perfWaits counts waitEvents in pid's threads with `perf stat -I 100`
// until the returned function is called; that function returns the
// counts per interval, or nil if perf could not run.
func perfWaits(pid int, out string) func() []waitCounts {
	args := []string{"stat", "-x", ",", "-I", "100", "-o", out, "-p", strconv.Itoa(pid)}
	for _, w := range waitEvents {
		args = append(args, "-e", w.event)
		if w.filter != "" {
			args = append(args, "--filter", w.filter)
		}
	}
	cmd := exec.Command("perf", args...)
	if err := cmd.Start(); err != nil {
		return func() []waitCounts { return nil }
	}
	return func() []waitCounts {
		_ = cmd.Process.Signal(syscall.SIGINT)
		_ = cmd.Wait()
		return readWaits(out)
	}
}

// readWaits parses perf stat -x, -I output: one line per interval and
// event, "seconds,count,unit,event,...", the events of an interval in -e
// order.
func readWaits(path string) []waitCounts {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var ws []waitCounts
	k := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Split(strings.TrimSpace(sc.Text()), ",")
		if len(fs) < 4 || strings.HasPrefix(fs[0], "#") {
			continue
		}
		secs, err1 := strconv.ParseFloat(fs[0], 64)
		n, err2 := strconv.ParseInt(fs[1], 10, 64)
		if err1 != nil || err2 != nil {
			continue // "<not counted>" and the like
		}
		at := time.Duration(secs * float64(time.Second))
		if len(ws) == 0 || ws[len(ws)-1].at != at {
			ws, k = append(ws, waitCounts{at: at}), 0
		}
		if k < len(waitEvents) {
			ws[len(ws)-1].counts[k] = n
		}
		k++
	}
	return ws
}

// perfRuns reports whether perf can count waitEvents here.
func perfRuns() bool {
	err := exec.Command("perf", "stat", "-e", waitEvents[0].event, "--", "true").Run()
	if err != nil {
		logf("no epoll wait counts: perf stat -e %s: %v", waitEvents[0].event, err)
	}
	return err == nil
}

//go:build linux

package router_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/router"
)

// emfileChildEnv marks the test binary re-run as a child process by
// TestRunningOutOfFileDescriptorsWhileAcceptingDelaysClientsUntilSomeAreFree:
// RLIMIT_NOFILE is the whole process's, so the test exhausts descriptors
// in a process of its own, never in the one where the other router tests
// run in parallel. The child's TestMain starts a PostgreSQL cluster of its
// own, as every run of this package does.
const emfileChildEnv = "PGFERRY_TEST_EMFILE_CHILD"

// A listener the relay loop accepts on (loop mode) has no other
// descriptor: out of descriptors, the loop's accept4 fails, it gives
// accepting back to the accept goroutine (giveBack), which cannot open its
// own pollable duplicate either (usable false) and backs off, retrying,
// and hands the listener to the loop again at each retry. A client that
// connects meanwhile waits in the backlog, and once descriptors are free
// it and later clients are served, the later ones accepted by the loop
// again.
func TestRunningOutOfFileDescriptorsWhileAcceptingDelaysClientsUntilSomeAreFree(t *testing.T) {
	skipWithoutLoop(t)
	if os.Getenv(emfileChildEnv) == "1" {
		outOfDescriptorsWhileAccepting(t)
		return
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0],
		"-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1", "-test.timeout=3m")
	cmd.Env = append(os.Environ(), emfileChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the child process out of descriptors failed: %v\n%s", err, out)
	}
	switch {
	case strings.Contains(string(out), "--- SKIP: "+t.Name()):
		t.Skipf("skipped in the child process:\n%s", out)
	case !strings.Contains(string(out), "--- PASS: "+t.Name()):
		t.Fatalf("the child process did not run the test:\n%s", out)
	}
	t.Logf("the child process:\n%s", out)
}

// outOfDescriptorsWhileAccepting is the child process's side of the test.
func outOfDescriptorsWhileAccepting(t *testing.T) {
	ctx := testContext(t)
	cfg := loopLoginConfig(t) // the loop on, whatever PGFERRY_TEST_RELAY_LOOP says
	f := ferrytest.Start(t, cfg)
	query := func(conn *pgx.Conn, what string) {
		t.Helper()
		var n int
		if err := conn.QueryRow(ctx, "select 7", pgx.QueryExecModeSimpleProtocol).Scan(&n); err != nil || n != 7 {
			t.Fatalf("%s: %d, %v", what, n, err)
		}
	}
	// A first client, before descriptors run out: the parker runs, the
	// listener is the loop's, the pool holds a server connection.
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	query(conn, "a client before descriptors ran out")
	conn.Close(ctx)
	clientsDropTo(t, f, 0)
	accepted := router.LoopAccepts(f.Server)
	if accepted == 0 {
		t.Skip("the relay loop does not accept clients itself in this build")
	}

	// The socket of the client that connects while descriptors are out,
	// made while there are some still.
	sfd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	free := exhaustDescriptors(t)
	freed, wrapped := false, false
	defer func() {
		if !freed {
			free()
		}
		if !wrapped {
			syscall.Close(sfd)
		}
	}()
	if err := syscall.Connect(sfd, &syscall.SockaddrInet4{Port: f.Addr.Port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("connect while out of descriptors: %v (the port should keep listening)", err)
	}

	// The loop gives the listener back at each failed accept, and the
	// accept goroutine backs off further at each failed retry: the delays
	// it logs double up to a second. Were the listener not given back, the
	// loop would spin on it and the goroutine log nothing; were the
	// goroutine to stop, it would log once.
	var delays []float64
	ferrytest.Eventually(t, 30*time.Second, "the accept goroutine to back off to a retry in 320ms, out of descriptors", func() (bool, error) {
		delays = backOffDelays(t, f.Logs())
		return len(delays) > 0 && delays[len(delays)-1] >= 0.32, nil
	})
	for i := 1; i < len(delays); i++ {
		if want := min(2*delays[i-1], 1); delays[i] != want {
			t.Fatalf("retry delays %v: the back-off does not double (delay %d is %v, want %v)", delays, i, delays[i], want)
		}
	}
	if delays[0] != 0.005 {
		t.Fatalf("retry delays %v: want the first 5ms", delays)
	}
	// Not served meanwhile: nobody accepted the client.
	if n := router.Clients(f.Server); n != 0 {
		t.Fatalf("pgferry counts %d clients while out of descriptors; want 0", n)
	}
	if n := router.LoopAccepts(f.Server); n != accepted {
		t.Fatalf("the loop accepted %d clients while out of descriptors; want still %d", n, accepted)
	}
	retries := len(delays)

	free()
	freed = true

	// The client that waited in the backlog logs in and runs a query.
	fl := os.NewFile(uintptr(sfd), "client")
	wrapped = true
	nc, err := net.FileConn(fl)
	fl.Close()
	if err != nil {
		t.Fatal(err)
	}
	cc, err := pgx.ParseConfig(f.AppDSN())
	if err != nil {
		t.Fatal(err)
	}
	dialed := false
	cc.DialFunc = func(context.Context, string, string) (net.Conn, error) {
		if dialed {
			return nil, net.ErrClosed
		}
		dialed = true
		return nc, nil
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn = ferrytest.ConnectConfig(t, cctx, cc)
	query(conn, "the client that connected while descriptors were out")
	conn.Close(ctx)
	byLoop := router.LoopAccepts(f.Server) - accepted
	t.Logf("the client in the backlog was accepted by the %s after %d retries", map[bool]string{true: "relay loop", false: "accept goroutine"}[byLoop == 1], retries)

	// Later clients are the loop's again: it took the listener back.
	for i := 0; i < 2; i++ {
		before := router.LoopAccepts(f.Server)
		conn := ferrytest.Connect(t, cctx, f.AppDSN())
		query(conn, "a client after descriptors were freed")
		conn.Close(ctx)
		if n := router.LoopAccepts(f.Server); n != before+1 {
			t.Fatalf("the loop has accepted %d clients in all after descriptors were freed; want %d: it did not take the listener back", n, before+1)
		}
	}
	clientsDropTo(t, f, 0)
}

// exhaustDescriptors lowers RLIMIT_NOFILE to a little above the
// descriptors open now and opens /dev/null until none is left; free closes
// them and restores the limit.
func exhaustDescriptors(t *testing.T) (free func()) {
	t.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	highest := 0
	for _, e := range ents {
		var n int
		for _, c := range e.Name() {
			n = 10*n + int(c-'0')
		}
		highest = max(highest, n)
	}
	lim := old
	lim.Cur = uint64(highest) + 64
	if lim.Cur > old.Cur {
		t.Fatalf("RLIMIT_NOFILE is %d, below the descriptors open", old.Cur)
	}
	var hog []int
	free = func() {
		// Raising the limit frees descriptors at once; closing the hog
		// then gives them back.
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
			t.Errorf("restore RLIMIT_NOFILE: %v", err)
		}
		for _, fd := range hog {
			syscall.Close(fd)
		}
		hog = nil
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	for {
		fd, err := syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err == syscall.EMFILE {
			break
		}
		if err != nil {
			free()
			t.Fatal(err)
		}
		hog = append(hog, fd)
	}
	return free
}

// backOffDelays returns the delays (in seconds) the accept goroutine logged
// as it retried, in order, when it could not wait for clients because the
// process was out of descriptors.
func backOffDelays(t *testing.T, logs string) []float64 {
	t.Helper()
	var delays []float64
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !strings.Contains(string(line), "cannot wait for clients") {
			continue
		}
		var e struct {
			Error   string  `json:"error"`
			RetryIn float64 `json:"retry_in"`
		}
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatalf("log line %s: %v", line, err)
		}
		if !strings.Contains(e.Error, "too many open files") {
			t.Fatalf("the accept goroutine could not wait for clients for another reason: %s", line)
		}
		delays = append(delays, e.RetryIn)
	}
	return delays
}

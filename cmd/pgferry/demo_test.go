package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/internal/pgtest"
)

func TestTheDemoPrintsAWorkingPsqlLineAndRemovesItsClusterOnCtrlC(t *testing.T) {
	dir := t.TempDir()
	bin := buildPgferry(t, dir)
	// The demo's cluster lives under TMPDIR; the postgres user must reach
	// it, and t.TempDir's parent is private to root.
	tmp, err := os.MkdirTemp("", "pgferry-demo-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	if err := os.Chmod(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	port, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp, fmt.Sprintf("PGFERRY_LISTEN_PORT=%d", port))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})

	// The banner names the port pgferry listens on, the one from the
	// environment, not the default.
	psqlLine := regexp.MustCompile(`psql "([^"]+)"`)
	lines := bufio.NewScanner(stderr)
	var dsn string
	var seen strings.Builder
	for dsn == "" && lines.Scan() {
		seen.WriteString(lines.Text() + "\n")
		if m := psqlLine.FindStringSubmatch(lines.Text()); m != nil {
			dsn = m[1]
		}
	}
	if dsn == "" {
		t.Fatalf("the demo printed no psql line:\n%s", seen.String())
	}
	if !strings.Contains(dsn, fmt.Sprintf("port=%d ", port)) {
		t.Fatalf("the psql line %q does not name port %d", dsn, port)
	}
	go func() { // keep draining the log so pgferry never blocks on it
		for lines.Scan() {
		}
	}()

	var got int
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, dsn+" sslmode=disable")
		if err == nil {
			err = conn.QueryRow(ctx, "select 41 + 1").Scan(&got)
			conn.Close(ctx)
		}
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the printed psql line does not connect: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got != 42 {
		t.Fatalf("select 41 + 1 through the demo returned %d", got)
	}

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the demo did not exit cleanly on Ctrl-C: %v", err)
	}
	left, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		names := make([]string, len(left))
		for i, e := range left {
			names[i] = e.Name()
		}
		t.Fatalf("the demo left %v behind after Ctrl-C", names)
	}
}

func TestPgferryBinaryDoesNotLinkTheTestHarness(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/pgferry/pgferry/cmd/pgferry").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		switch dep {
		case "testing", "github.com/pgferry/pgferry/internal/pgtest", "github.com/pgferry/pgferry/internal/ferrytest":
			t.Errorf("the pgferry binary links %s", dep)
		}
	}
}

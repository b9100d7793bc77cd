package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestVersionFlagPrintsTheVersionSetAtBuildTime(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "pgferry")
	build := exec.Command("go", "build", "-ldflags", "-X github.com/pgferry/pgferry/internal/version.Version=v9.8.7-test", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "-version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "pgferry v9.8.7-test (go") {
		t.Fatalf("pgferry -version: %v, %q", err, out)
	}
}

func TestCheckConfigStrictFailsOnKeysPgferryWouldIgnore(t *testing.T) {
	dir := t.TempDir()
	ini := filepath.Join(dir, "pgbouncer.ini")
	doc := "[databases]\napp = host=127.0.0.1 dbname=app\n[pgbouncer]\nauth_type = trust\nlog_pooler_errors = 1\n"
	if err := os.WriteFile(ini, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, int) {
		cmd := exec.Command("go", append([]string{"run", "."}, args...)...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			return string(out), ee.ExitCode()
		case err != nil:
			t.Fatal(err)
		}
		return string(out), 0
	}
	out, code := run("-check-config", "-config", ini)
	if code != 0 || !strings.Contains(out, "log_pooler_errors is not supported") {
		t.Fatalf("-check-config: exit %d, %s", code, out)
	}
	out, code = run("-check-config", "-strict", "-config", ini)
	if code == 0 || !strings.Contains(out, "log_pooler_errors is not supported") || !strings.Contains(out, "would be ignored") {
		t.Fatalf("-check-config -strict: exit %d, want non-zero naming the ignored key:\n%s", code, out)
	}
}

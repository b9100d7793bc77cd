package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pgferry/pgferry/configs"
)

// buildPgferry builds the pgferry binary into dir (with extra go build
// flags, if any) and returns its path.
func buildPgferry(t *testing.T, dir string, flags ...string) string {
	t.Helper()
	bin := filepath.Join(dir, "pgferry")
	args := append(append([]string{"build"}, flags...), "-o", bin, ".")
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func TestVersionFlagPrintsTheVersionSetAtBuildTime(t *testing.T) {
	bin := buildPgferry(t, t.TempDir(), "-ldflags", "-X github.com/pgferry/pgferry/internal/version.Version=v9.8.7-test")
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

func TestAFileAPgBouncerIniIncludesIsWatched(t *testing.T) {
	dir := t.TempDir()
	ini := filepath.Join(dir, "pgbouncer.ini")
	if err := os.WriteFile(ini, []byte("[pgbouncer]\nauth_type = trust\n[databases]\n%include dbs.ini\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "dbs.ini"), []byte("app = host=127.0.0.1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := configs.Load(ini)
	if err != nil {
		t.Fatal(err)
	}
	if got := watchedFiles(ini, cfg); !slices.Contains(got, filepath.Join(dir, "dbs.ini")) {
		t.Errorf("watched files %q lack the included dbs.ini", got)
	}
}

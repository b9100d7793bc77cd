package localpg

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// initdb writes the same data directory for every cluster Start makes: the
// superuser, encoding, locale and authentication are fixed, and only the
// superuser's password differs, which Start can set once the server runs.
// With Options.FromTemplate (the tests': internal/pgtest), initdb runs once
// per machine, PostgreSQL version and arguments, into a template kept in
// the temp directory for later runs, and each Start copies it: the copy
// costs a third of initdb's CPU, and a test run starts dozens of clusters
// (each of the router's replica tests its own pair).

// templatePassword is the template's superuser password, which Start
// replaces with the cluster's own (random) once the server is up: it must
// log in over TCP by SCRAM to see the server ready, as before the template.
const templatePassword = "localpg-template"

// initdbArgs are initdb's arguments after -D and --pwfile, for the template.
var initdbArgs = []string{
	"-U", "postgres",
	"--auth-host", "scram-sha-256",
	"--auth-local", "trust",
	"-E", "UTF8", "--locale", "C",
	"--no-sync", "--no-instructions",
}

// templates is the template of this process, once found or made.
var templates struct {
	mu      sync.Mutex
	dataDir string
}

// templateDataDir returns the data directory of the template, making it
// if no process has yet. Two processes may make one at once: each writes
// its own and renames it into place, and the loser uses the winner's.
func templateDataDir(ctx context.Context, owner *osUser) (string, error) {
	templates.mu.Lock()
	defer templates.mu.Unlock()
	if templates.dataDir != "" {
		return templates.dataDir, nil
	}
	version, err := exec.CommandContext(ctx, Binary("initdb"), "--version").Output()
	if err != nil {
		return "", fmt.Errorf("initdb --version: %w", err)
	}
	uid := uint32(os.Geteuid())
	if owner != nil {
		uid = owner.uid
	}
	sum := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%s\x00%d", strings.TrimSpace(string(version)), strings.Join(initdbArgs, "\x00"), templatePassword, uid))
	home := filepath.Join(os.TempDir(), "pgferry-localpg-template-"+hex.EncodeToString(sum[:6]))
	if err := makeTemplate(ctx, owner, home); err != nil {
		return "", err
	}
	templates.dataDir = filepath.Join(home, "data")
	return templates.dataDir, nil
}

// makeTemplate makes the template in home unless it is there, whole.
func makeTemplate(ctx context.Context, owner *osUser, home string) error {
	if complete(home) {
		return nil
	}
	tmp, err := mkdirTemp("pgferry-localpg-template-new-*", owner)
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp) // (gone after the rename)
	pwfile := filepath.Join(tmp, "pwfile")
	if err := writeFile(pwfile, []byte(templatePassword+"\n"), 0o600, owner); err != nil {
		return err
	}
	args := append([]string{"-D", filepath.Join(tmp, "data"), "--pwfile", pwfile}, initdbArgs...)
	if _, err := (runner{as: owner, dir: tmp}).run(ctx, nil, "initdb", args...); err != nil {
		return fmt.Errorf("localpg: %w", err)
	}
	if err := os.Remove(pwfile); err != nil {
		return fmt.Errorf("localpg: %w", err)
	}
	n, err := countFiles(filepath.Join(tmp, "data"))
	if err != nil {
		return fmt.Errorf("localpg: template: %w", err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "files"), []byte(strconv.Itoa(n)), 0o600); err != nil {
		return fmt.Errorf("localpg: template: %w", err)
	}
	if err := os.Rename(tmp, home); err != nil && !complete(home) {
		// Not another process's template that won the race: a broken one
		// (a temp cleaner took some of its files) is in the way.
		if err := os.RemoveAll(home); err != nil {
			return fmt.Errorf("localpg: remove broken template %s: %w", home, err)
		}
		if err := os.Rename(tmp, home); err != nil {
			return fmt.Errorf("localpg: template: %w", err)
		}
	}
	return nil
}

// complete reports whether the template in home has all the files it was
// made with.
func complete(home string) bool {
	b, err := os.ReadFile(filepath.Join(home, "files"))
	if err != nil {
		return false
	}
	n, err := countFiles(filepath.Join(home, "data"))
	return err == nil && strconv.Itoa(n) == string(b)
}

// countFiles counts the files and directories under dir.
func countFiles(dir string) (int, error) {
	n := 0
	err := filepath.WalkDir(dir, func(string, fs.DirEntry, error) error {
		n++
		return nil
	})
	return n, err
}

// copyTemplate makes c's data directory a copy of the template, owners and
// modes kept.
func (c *Cluster) copyTemplate(ctx context.Context) error {
	src, err := templateDataDir(ctx, c.owner)
	if err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, "cp", "-a", src, c.DataDir).CombinedOutput(); err != nil {
		return fmt.Errorf("localpg: copy template %s: %w: %s", src, err, strings.TrimSpace(string(out)))
	}
	return nil
}

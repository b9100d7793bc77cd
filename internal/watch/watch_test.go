package watch

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func next(t *testing.T, w *Watcher) []string {
	t.Helper()
	select {
	case c := <-w.Changes():
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no change reported")
		return nil
	}
}

func quiet(t *testing.T, w *Watcher, what string) {
	t.Helper()
	select {
	case c := <-w.Changes():
		t.Fatalf("%s reported a change: %v", what, c)
	case <-time.After(300 * time.Millisecond): // several debounce periods
	}
}

// kubeMount lays out a directory as the kubelet mounts a ConfigMap: the
// file is a symlink through "..data", itself a symlink to a timestamped
// directory, and an update writes a new directory and renames a new
// "..data" link over the old one.
func kubeMount(t *testing.T, dir, name, content, version string) {
	t.Helper()
	data := filepath.Join(dir, "..v"+version)
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(data, name), content)
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink("..v"+version, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, name)); os.IsNotExist(err) {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAConfigMapUpdateThroughTheDataSymlinkIsReportedOnce(t *testing.T) {
	dir := t.TempDir()
	kubeMount(t, dir, "pgferry.toml", "a = 1\n", "1")
	w, err := New([]string{filepath.Join(dir, "pgferry.toml")}, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	kubeMount(t, dir, "pgferry.toml", "a = 2\n", "2")
	if got := next(t, w); !slices.Equal(got, []string{filepath.Join(dir, "pgferry.toml")}) {
		t.Fatalf("changed: %v", got)
	}
	quiet(t, w, "one update")
}

func TestOnlyChangesOfContentInWatchedFilesAreReported(t *testing.T) {
	dir := t.TempDir()
	cfg, users, other := filepath.Join(dir, "pgferry.toml"), filepath.Join(dir, "userlist.txt"), filepath.Join(dir, "notes.txt")
	write(t, cfg, "a = 1\n")
	write(t, users, `"app" "secret"`+"\n")
	w, err := New([]string{cfg, users, ""}, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	write(t, other, "unrelated")
	write(t, cfg, "a = 1\n") // same content
	quiet(t, w, "an unrelated file and an unchanged rewrite")
	// A burst of writes, then a replace by rename, is one change.
	for i := 0; i < 5; i++ {
		write(t, users, `"app" "secret2"`+"\n")
	}
	write(t, cfg+".new", "a = 3\n")
	if err := os.Rename(cfg+".new", cfg); err != nil {
		t.Fatal(err)
	}
	got := next(t, w)
	if !slices.Equal(got, []string{cfg, users}) && !slices.Equal(got, []string{users}) {
		t.Fatalf("changed: %v", got)
	}
	if len(got) == 1 { // the rename landed after the first debounce
		if again := next(t, w); !slices.Equal(again, []string{cfg}) {
			t.Fatalf("then changed: %v", again)
		}
	}
	// After SetPaths, the dropped file is no longer watched.
	if err := w.SetPaths([]string{cfg}); err != nil {
		t.Fatal(err)
	}
	write(t, users, "changed again\n")
	quiet(t, w, "a file no longer watched")
}

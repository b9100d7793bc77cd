// Package watch reports changes to the contents of a few files (pgferry's
// config file, auth_file, auth_hba_file), so pgferry can reload them by
// itself: a sidecar container cannot easily be sent SIGHUP.
//
// Each file is watched through its directory, and a change is a change of
// content, not an event: an editor's rename-and-replace, a file deleted and
// written again, and a Kubernetes ConfigMap update (the mounted file is a
// symlink through "..data", which the kubelet swaps to a new directory in
// one rename) are all seen, while events for other files in the directory,
// or writes that leave a file as it was, are not reported. Events are
// debounced: a burst of writes is one change.
//
// watch imports no pgferry package.
package watch

import (
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Watcher watches files for changes of content. Create it with New, read
// Changes, and Close it; SetPaths may change the files while it runs. Safe
// for concurrent use.
type Watcher struct {
	fs       *fsnotify.Watcher
	debounce time.Duration
	changes  chan []string
	errs     chan error
	done     chan struct{}
	wg       sync.WaitGroup

	// mu guards the fields below.
	mu    sync.Mutex
	files map[string][32]byte // path -> content hash when last reported
	dirs  map[string]bool     // directories watched
}

// New watches paths (empty ones are skipped); a burst of events closer
// together than debounce is reported once.
func New(paths []string, debounce time.Duration) (*Watcher, error) {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	w := &Watcher{fs: fw, debounce: debounce, changes: make(chan []string, 1), errs: make(chan error, 1),
		done: make(chan struct{}), files: map[string][32]byte{}, dirs: map[string]bool{}}
	if err := w.SetPaths(paths); err != nil {
		fw.Close()
		return nil, err
	}
	w.wg.Add(1)
	go w.loop()
	return w, nil
}

// Changes delivers the paths whose contents changed, after each debounced
// burst of events. Paths not yet read when a new change comes are merged
// into it. It is closed by Close.
func (w *Watcher) Changes() <-chan []string { return w.changes }

// Errors delivers errors of the underlying watcher (a full event queue,
// say); the watcher carries on. It is closed by Close.
func (w *Watcher) Errors() <-chan error { return w.errs }

// SetPaths replaces the watched files, keeping the hashes of those still
// watched.
func (w *Watcher) SetPaths(paths []string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	files := map[string][32]byte{}
	dirs := map[string]bool{}
	for _, p := range paths {
		if p == "" {
			continue
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return err
		}
		if h, ok := w.files[abs]; ok {
			files[abs] = h
		} else {
			files[abs] = hashOf(abs)
		}
		dirs[filepath.Dir(abs)] = true
	}
	for d := range dirs {
		if !w.dirs[d] {
			if err := w.fs.Add(d); err != nil {
				return err
			}
		}
	}
	for d := range w.dirs {
		if !dirs[d] {
			w.fs.Remove(d)
		}
	}
	w.files, w.dirs = files, dirs
	return nil
}

// Close stops watching and returns once the watcher's goroutine has
// ended. It is idempotent.
func (w *Watcher) Close() error {
	select {
	case <-w.done:
		return nil
	default:
	}
	close(w.done)
	err := w.fs.Close()
	w.wg.Wait()
	return err
}

func (w *Watcher) loop() {
	defer w.wg.Done()
	defer close(w.errs)
	defer close(w.changes)
	var timer *time.Timer
	var fire <-chan time.Time
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case <-w.done:
			return
		case ev, ok := <-w.fs.Events:
			if !ok {
				return
			}
			if !w.inWatchedDir(ev.Name) {
				continue
			}
			if timer == nil {
				timer = time.NewTimer(w.debounce)
			} else {
				timer.Reset(w.debounce)
			}
			fire = timer.C
		case err, ok := <-w.fs.Errors:
			if !ok {
				return
			}
			select {
			case w.errs <- err:
			default:
			}
		case <-fire:
			fire = nil
			if changed := w.rehash(); len(changed) > 0 {
				w.deliver(changed)
			}
		}
	}
}

func (w *Watcher) inWatchedDir(name string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.dirs[filepath.Dir(name)]
}

// rehash returns the files whose contents differ from when last reported.
func (w *Watcher) rehash() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var changed []string
	for p, old := range w.files {
		if h := hashOf(p); h != old {
			w.files[p] = h
			changed = append(changed, p)
		}
	}
	slices.Sort(changed)
	return changed
}

func (w *Watcher) deliver(changed []string) {
	for {
		select {
		case w.changes <- changed:
			return
		case prev := <-w.changes: // not read yet: merge
			changed = slices.Compact(slices.Sorted(slices.Values(append(prev, changed...))))
		case <-w.done:
			return
		}
	}
}

// hashOf hashes a file's contents, following symlinks; a file that cannot
// be read hashes as all ones, so its reappearance is a change.
func hashOf(path string) [32]byte {
	b, err := os.ReadFile(path)
	if err != nil {
		var h [32]byte
		for i := range h {
			h[i] = 0xff
		}
		if errors.Is(err, os.ErrNotExist) {
			h[0] = 0xfe
		}
		return h
	}
	return sha256.Sum256(b)
}

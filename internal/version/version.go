// Package version says which pgferry this binary is, for -version, SHOW
// VERSION and pgferry_build_info. It imports no pgferry package.
package version

import (
	"runtime/debug"
	"sync"
)

// Version, when set at build time, is pgferry's version:
//
//	go build -ldflags "-X github.com/pgferry/pgferry/internal/version.Version=v1.4.0" ./cmd/pgferry
//
// The Dockerfile passes its VERSION build argument this way.
var Version string

// String returns the version: Version when set; else the module version
// when pgferry was built as a dependency at a release (go install
// ...@v1.4.0); else the git revision the binary was built from, with
// "-dirty" when the tree had changes (go build in a checkout); else
// "(devel)".
func String() string {
	once.Do(func() { resolved = resolve(Version, debug.ReadBuildInfo) })
	return resolved
}

var (
	once     sync.Once
	resolved string
)

func resolve(set string, read func() (*debug.BuildInfo, bool)) string {
	if set != "" {
		return set
	}
	bi, ok := read()
	if !ok {
		return "(devel)"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev string
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "(devel)"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return "(devel) " + rev
}

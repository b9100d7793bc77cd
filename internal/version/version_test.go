package version

import (
	"runtime/debug"
	"testing"
)

func TestVersionComesFromLdflagsThenTheModuleThenTheRevision(t *testing.T) {
	info := func(v string, settings ...debug.BuildSetting) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) {
			return &debug.BuildInfo{Main: debug.Module{Version: v}, Settings: settings}, true
		}
	}
	rev := debug.BuildSetting{Key: "vcs.revision", Value: "0123456789abcdef0123"}
	dirty := debug.BuildSetting{Key: "vcs.modified", Value: "true"}
	tests := []struct {
		name, set string
		read      func() (*debug.BuildInfo, bool)
		want      string
	}{
		{"ldflags win", "v1.4.0", info("v1.3.0", rev), "v1.4.0"},
		{"a released module", "", info("v1.3.0", rev), "v1.3.0"},
		{"a checkout", "", info("(devel)", rev), "(devel) 0123456789ab"},
		{"a checkout with changes", "", info("(devel)", rev, dirty), "(devel) 0123456789ab-dirty"},
		{"nothing known", "", info("(devel)"), "(devel)"},
		{"no build info", "", func() (*debug.BuildInfo, bool) { return nil, false }, "(devel)"},
	}
	for _, tc := range tests {
		if got := resolve(tc.set, tc.read); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

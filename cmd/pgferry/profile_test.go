package main

import "testing"

func TestTheHeapProfileIsSampledOnlyWhereDebugListenServesItUnlessGODEBUGSaysOtherwise(t *testing.T) {
	const def = 512 * 1024 // the runtime's default rate
	for _, tc := range []struct {
		what                 string
		debugListen, godebug string
		want                 int
	}{
		{"no debug_listen", "", "", 0},
		{"no debug_listen, other GODEBUG settings", "", "gctrace=1,madvdontneed=1", 0},
		{"debug_listen set", "127.0.0.1:6060", "", def},
		{"GODEBUG memprofilerate", "", "gctrace=1,memprofilerate=1", def},
	} {
		if got := heapProfileRate(tc.debugListen, tc.godebug, def); got != tc.want {
			t.Errorf("%s: heap profile rate %d; want %d", tc.what, got, tc.want)
		}
	}
}

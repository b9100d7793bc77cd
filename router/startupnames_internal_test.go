package router

import (
	"testing"
	"unsafe"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/protocol"
)

// TestASessionKeepsNoPieceOfItsStartupPacket guards the memory of idle
// clients: the names and parameter values a session keeps are shared
// copies (intern), not substrings of its copy of the startup packet, which
// each of them would keep alive for as long as the client stays connected
// (and, in a burst of TLS logins, the spans around it: about 500 bytes per
// client at 1,000).
func TestASessionKeepsNoPieceOfItsStartupPacket(t *testing.T) {
	packet := protocol.AppendStartupMessage(nil, []protocol.Param{
		{Key: "user", Value: "app"},
		{Key: "database", Value: "appdb"},
		{Key: "application_name", Value: "worker"},
		{Key: "lock_timeout", Value: "5s"}, // not tracked: the key is the client's
		{Key: "options", Value: "-c geqo=off"},
	})
	st, err := protocol.ParseStartup(packet[4:]) // (after the length, as ReadStartup)
	if err != nil {
		t.Fatal(err)
	}
	// Every name and value ParseStartup returns is a piece of one copy of
	// the packet, in the packet's order.
	first, last := st.Params[0], st.Params[len(st.Params)-1]
	lo := uintptr(unsafe.Pointer(unsafe.StringData(first.Key)))
	hi := uintptr(unsafe.Pointer(unsafe.StringData(last.Value))) + uintptr(len(last.Value))
	inPacket := func(s string) bool {
		p := uintptr(unsafe.Pointer(unsafe.StringData(s)))
		return len(s) > 0 && p >= lo && p < hi
	}

	ss := &session{srv: &Server{}}
	ss.user, ss.database = startupNames(st)
	if err := ss.initParams(configs.Default(), st); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name      string
		got, want string
	}{
		{"user", ss.user, "app"},
		{"database", ss.database, "appdb"},
		{"application_name", ss.appName, "worker"},
		{"lock_timeout", ss.params.get("lock_timeout"), "5s"},
		{"geqo (from options)", ss.params.get("geqo"), "off"},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%s is %q; want %q", tc.name, tc.got, tc.want)
		}
	}
	for _, p := range ss.params {
		for _, s := range []string{p.k, p.v} {
			if inPacket(s) {
				t.Errorf("the session keeps %q of parameter %s as a piece of its startup packet", s, p.k)
			}
		}
	}
	for _, k := range ss.paramKeys {
		if inPacket(k) {
			t.Errorf("the session keeps the parameter name %q as a piece of its startup packet", k)
		}
	}
	for _, tc := range tests[:2] {
		if inPacket(tc.got) {
			t.Errorf("the session keeps its %s %q as a piece of its startup packet", tc.name, tc.got)
		}
	}
}

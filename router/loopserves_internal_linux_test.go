//go:build linux && !pgferry_nopark

package router

import (
	"encoding/binary"
	"testing"

	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router/classify"
)

// executeFrame is an Execute of portal, all rows.
func executeFrame(portal string) []byte {
	b := []byte{protocol.MsgExecute, 0, 0, 0, 0}
	b = append(append(b, portal...), 0)
	b = binary.BigEndian.AppendUint32(b, 0)
	binary.BigEndian.PutUint32(b[1:], uint32(len(b)-1))
	return b
}

// The relay loop must never wait: an Execute of a portal whose statement
// changes session state (a LISTEN waits for the listener connection, a SET
// may pin) is the goroutine's, whatever else the session holds; other
// portals' are the loop's, and looking costs no allocation.
func TestTheRelayLoopHandsBackAnExecuteOfAPortalThatChangesSessionState(t *testing.T) {
	listen := classify.SQL([]byte("LISTEN ch"))
	if listen.Listen != "ch" {
		t.Fatalf("classify: LISTEN ch listens on %q", listen.Listen)
	}
	tests := []struct {
		name    string
		portals map[string]*classify.Class // nil: no rareState at all
		typ     byte
		frame   []byte
		want    bool
	}{
		{name: "no session state", typ: protocol.MsgExecute, frame: executeFrame(""), want: true},
		{name: "no portal that changes state", portals: map[string]*classify.Class{}, typ: protocol.MsgExecute, frame: executeFrame(""), want: true},
		{name: "the unnamed portal of a LISTEN", portals: map[string]*classify.Class{"": &listen}, typ: protocol.MsgExecute, frame: executeFrame(""), want: false},
		{name: "a named portal of a LISTEN", portals: map[string]*classify.Class{"p1": &listen}, typ: protocol.MsgExecute, frame: executeFrame("p1"), want: false},
		{name: "another portal", portals: map[string]*classify.Class{"p1": &listen}, typ: protocol.MsgExecute, frame: executeFrame("p2"), want: true},
		{name: "a malformed Execute", portals: map[string]*classify.Class{"p1": &listen}, typ: protocol.MsgExecute, frame: []byte{protocol.MsgExecute, 0, 0, 0, 6, 'p'}, want: false},
		{name: "a Close of the LISTEN's portal", portals: map[string]*classify.Class{"p1": &listen}, typ: protocol.MsgClose, frame: protocol.AppendClose(nil, 'P', "p1"), want: true},
		{name: "a Sync", portals: map[string]*classify.Class{"": &listen}, typ: protocol.MsgSync, frame: []byte{protocol.MsgSync, 0, 0, 0, 4}, want: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ss := &session{}
			if tc.portals != nil {
				ss.rare = &rareState{statePortals: tc.portals}
			}
			if got := ss.loopServes(tc.typ, tc.frame); got != tc.want {
				t.Fatalf("loopServes: %v, want %v", got, tc.want)
			}
			if n := testing.AllocsPerRun(100, func() { ss.loopServes(tc.typ, tc.frame) }); n != 0 {
				t.Fatalf("loopServes allocates %v times", n)
			}
		})
	}
}

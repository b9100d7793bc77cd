//go:build linux && !pgferry_nopark

package router

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"io"
	"os"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/internal/tls13"
	"github.com/pgferry/pgferry/pool"
)

func TestClosingTheParkerTwiceLeavesFilesOpenedMeanwhileAlone(t *testing.T) {
	p := &parker{srv: &Server{log: zap.NewNop()}}
	if !p.start() {
		t.Skip("epoll is not available")
	}
	p.close()
	// Files opened now get the numbers the parker's epoll set and pipe
	// had; a second close must not write to or close them.
	type pipe struct{ r, w *os.File }
	var pipes []pipe
	for range 4 {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		pipes = append(pipes, pipe{r, w})
		defer r.Close()
		defer w.Close()
	}
	p.close()
	for i, pp := range pipes {
		if _, err := pp.w.Write([]byte{byte('a' + i)}); err != nil {
			t.Fatalf("pipe %d opened after the first close: %v", i, err)
		}
		b := make([]byte, 8)
		n, err := pp.r.Read(b)
		if err != nil || n != 1 || b[0] != byte('a'+i) {
			t.Fatalf("pipe %d opened after the first close read %q, %v; want only its own byte", i, b[:n], err)
		}
	}
}

func TestAParkedClientThatCannotBeResumedIsToldWhyAndItsDescriptorClosed(t *testing.T) {
	// A pipe is no socket: net.FileConn fails on it as it does when the
	// process is out of descriptors.
	r, dup := pipeToRead(t)
	ss := &session{srv: &Server{log: zap.NewNop()}, fd: int32(dup)}

	if err := ss.reattach(); err == nil {
		t.Fatal("reattach made a conn of a pipe")
	}
	if _, ok := ss.raw.(closedConn); !ok || ss.fd != -1 {
		t.Fatalf("after a failed reattach raw is %T and fd %d; want closedConn and -1", ss.raw, ss.fd)
	}
	// The client reads a FATAL naming the failure, then end of file: the
	// session's descriptor was the last writer, and it is closed.
	r.SetReadDeadline(time.Now().Add(10 * time.Second)) // a leaked descriptor would keep the pipe open
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) == 0 || got[0] != 'E' || !bytes.Contains(got, []byte("53000")) || !bytes.Contains(got, []byte("could not resume this idle connection")) {
		t.Fatalf("the client read %q; want one FATAL 53000 saying the connection could not be resumed", got)
	}
	ss.closeSocket() // the session's end must not close the number again
}

func TestATLS13ClientThatCannotBeResumedIsToldWhyOverTLSAndItsKeysAreWiped(t *testing.T) {
	skipWithoutTakeover(t)
	raw, cc := tcpPair(t)
	cfg := tls13ServerConfig(t)
	tap := tls13.NewTap(raw)
	server := tls.Server(tap, cfg)
	client := tls13Client(cc)
	handshakeBoth(t, server, client)
	conn := tap.Takeover(server, cfg)
	if conn == nil {
		t.Fatal("not taken over")
	}
	conn.Park() // as detach does

	// The session's descriptor is a pipe's, on which net.FileConn fails as
	// it does when the process is out of descriptors. What reattach writes
	// to it is carried to the client's socket by hand.
	r, dup := pipeToRead(t)
	ss := &session{srv: &Server{log: zap.NewNop()}, fd: int32(dup), conn: conn, tls: true}

	if err := ss.reattach(); err == nil {
		t.Fatal("reattach made a conn of a pipe")
	}
	if _, ok := ss.conn.(closedConn); !ok || ss.fd != -1 {
		t.Fatalf("after a failed reattach conn is %T and fd %d; want closedConn and -1", ss.conn, ss.fd)
	}
	if !tlsKeysWiped(t, conn) {
		t.Fatal("the keys of a session that could not be resumed were not wiped")
	}
	r.SetReadDeadline(time.Now().Add(10 * time.Second))
	sent, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sent, []byte("53000")) {
		t.Fatal("the FATAL went out in the clear")
	}
	if _, err := raw.Write(sent); err != nil {
		t.Fatal(err)
	}
	raw.Close()

	// The client decrypts one FATAL 53000 under the keys it had before the
	// session parked, then the connection ends.
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(client)
	if len(got) == 0 || got[0] != 'E' || !bytes.Contains(got, []byte("C53000\x00")) || !bytes.Contains(got, []byte("could not resume this idle connection")) {
		t.Fatalf("the client read %q, %v; want one FATAL 53000 saying the connection could not be resumed", got, err)
	}
	if n := int(binary.BigEndian.Uint32(got[1:])) + 1; n != len(got) {
		t.Fatalf("the client read %d bytes; want the FATAL's %d and nothing more", len(got), n)
	}
}

func TestSessionsThatLoggedInAndWaitAreAskedToParkOnceWithoutWaitingForASweep(t *testing.T) {
	srv := &Server{log: zap.NewNop()}
	p := &srv.parker
	p.srv = srv
	waiting, busy, talked, ended := &session{srv: srv}, &session{srv: srv, server: &pool.ServerConn{}}, &session{srv: srv}, &session{srv: srv}
	fresh := &session{srv: srv}
	for _, ss := range []*session{waiting, busy, ended, fresh} {
		ss.flags.Store(stYoung) // as admitted leaves them
	}
	ended.flags.Or(stEnded)
	// talked sent a request since its login: serve cleared stYoung.
	now := monoNow()
	old := now - mono(youngIdle)
	p.young = []youngSession{{waiting, old}, {busy, old}, {talked, old}, {ended, old}, {fresh, now + mono(time.Hour)}}
	p.sweepYoung(monoNow())
	if !waiting.has(evPark) || !waiting.has(evWake) {
		t.Fatalf("a session idle since it logged in %v ago was not asked to park (flags %b)", youngIdle, waiting.flags.Load())
	}
	for what, ss := range map[string]*session{"just logged in": fresh, "in a transaction": busy, "sent a request since its login": talked, "ended": ended} {
		if ss.has(evPark | evWake) {
			t.Errorf("a session that %s was woken or asked to park (flags %b)", what, ss.flags.Load())
		}
	}
	if len(p.young) != 1 || p.young[0].ss != fresh {
		t.Fatalf("after a look, %d sessions wait to be looked at again; want only the one too young", len(p.young))
	}
	if got := mono(p.oldestYoung.Load()); got != p.young[0].at {
		t.Fatalf("the loop would next look at young sessions from %d; want %d, when the one left was admitted", got, p.young[0].at)
	}
	waiting.flags.Store(0)
	p.young[0].at = now - mono(youngIdle) // the young one comes of age
	p.sweepYoung(monoNow())
	if waiting.has(evPark) {
		t.Fatal("a session was asked to park twice; the regular sweep takes over after the first time")
	}
	if !fresh.has(evPark) || len(p.young) != 0 {
		t.Fatalf("the session that came of age was not asked (flags %b), or %d sessions are still kept", fresh.flags.Load(), len(p.young))
	}
	if got := p.oldestYoung.Load(); got != 0 {
		t.Fatalf("with no young session left, the loop would still look at them from %d", got)
	}
}

func TestMemoryGoesBackOnceAWaveOfParkingIsOverAndNotTooOften(t *testing.T) {
	type sweep struct {
		asked, parked int
		logins        uint64
		at            time.Duration // since the first sweep
		release       bool
	}
	for _, tc := range []struct {
		name   string
		sweeps []sweep
	}{
		{"a burst parks, then logins stop", []sweep{
			{asked: 300, parked: 0, logins: 300},
			{asked: 0, parked: 300, logins: 600, at: time.Second},       // logins still arriving
			{asked: 200, parked: 300, logins: 600, at: 2 * time.Second}, // the last of them idle
			{asked: 0, parked: 500, logins: 600, at: 3 * time.Second, release: true},
			{asked: 0, parked: 500, logins: 600, at: 4 * time.Second}, // nothing new since
		}},
		{"fewer than the threshold parked", []sweep{
			{asked: 0, parked: releaseAfterParking - 1, logins: 300, release: false},
			{asked: 0, parked: releaseAfterParking - 1, logins: 300, at: time.Second},
		}},
		{"logins keep trickling in", []sweep{
			{asked: 0, parked: 400, logins: 1, release: false},
			{asked: 0, parked: 400, logins: 2, at: 1 * time.Second},
			{asked: 0, parked: 400, logins: 3, at: 2 * time.Second},
			{asked: 0, parked: 400, logins: 4, at: 3 * time.Second},
			{asked: 0, parked: 400, logins: 5, at: 4 * time.Second, release: true}, // waited long enough
		}},
		{"waves that follow each other closely", []sweep{
			{asked: 0, parked: 300, logins: 0, release: true},
			{asked: 0, parked: 0, logins: 0, at: time.Second}, // they all woke up
			{asked: 0, parked: 300, logins: 0, at: 2 * time.Second},
			{asked: 0, parked: 300, logins: 0, at: 3 * time.Second},
			{asked: 0, parked: 300, logins: 0, at: releaseEvery, release: true},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r releaseState
			base := monoNow()
			for i, s := range tc.sweeps {
				if got := r.next(s.asked, s.parked, s.logins, base+mono(s.at)); got != s.release {
					t.Fatalf("sweep %d (%+v): release %v, want %v", i, s, got, s.release)
				}
			}
		})
	}
}

// pipeToRead returns the read end of a pipe, closed when the test ends, and
// a bare descriptor of its write end, for a session to own.
func pipeToRead(t *testing.T) (*os.File, int) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	dup, err := syscall.Dup(int(w.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	return r, dup
}

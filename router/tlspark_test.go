package router_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/internal/tls13"
	"github.com/pgferry/pgferry/router"
)

// TestAParkedTLS13ClientsKeyUpdateResumesItsSessionWhichAnswersUnderNewKeys
// parks a TLS 1.3 session (its tls13.Conn Parked, its socket in the
// parker's epoll set), then has the client update its keys: OpenSSL's
// s_client, since crypto/tls clients cannot be made to send a KeyUpdate.
// s_client speaks PostgreSQL's SSLRequest itself (-starttls postgres) and
// passes the rest of what the test writes through as bytes, except input
// that begins with one of its command letters (K and k: a KeyUpdate asking
// for the server's, or not); so the client logs in with auth_type trust (no
// exchange to script) and queries with the extended protocol (a Query
// message would begin with Q, s_client's quit). s_client drops the rest of
// a read that held a command, so each input waits until s_client has acted
// on the one before; -msg makes it print the KeyUpdates pgferry sends.
//
// With the relay loop on, the session enters it after its login, and the
// loop parks it; the KeyUpdate then arrives on the loop, which reads it
// and writes pgferry's own on the socket it never blocks on.
func TestAParkedTLS13ClientsKeyUpdateResumesItsSessionWhichAnswersUnderNewKeys(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	skipWithoutParking(t)
	t.Parallel()
	for _, loop := range []bool{false, true} {
		t.Run(map[bool]string{false: "on its goroutine", true: "in the relay loop"}[loop], func(t *testing.T) {
			if loop {
				skipWithoutLoop(t)
			}
			t.Parallel()
			aParkedTLS13ClientUpdatesItsKeys(t, loop)
		})
	}
}

func aParkedTLS13ClientUpdatesItsKeys(t *testing.T, loop bool) {
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatal("openssl is not installed (.ci/install installs it)")
	}
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	offerClientTLS(cfg, "require")
	cfg.AuthType = "trust"
	cfg.RelayLoop = loop
	f := ferrytest.Start(t, cfg)

	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(cctx, bin, "s_client", "-connect", f.Addr.String(), "-starttls", "postgres",
		"-tls1_3", "-msg")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out := &ferrytest.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close() // s_client ends at the end of its input
		cmd.Wait()
		if t.Failed() {
			t.Logf("openssl said:\n%q", out.String())
		}
	}()
	send := func(b []byte) {
		t.Helper()
		if _, err := stdin.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	// waitFor waits for the n-th occurrence of s in what s_client printed.
	waitFor := func(what, s string, n int) {
		t.Helper()
		ferrytest.Eventually(t, parkWait, what, func() (bool, error) {
			return strings.Count(out.String(), s) >= n, nil
		})
	}
	const readyForQuery = "Z\x00\x00\x00\x05I"
	// What -msg prints for a KeyUpdate pgferry sent.
	const serverKeyUpdate = "<<< TLS 1.3, Handshake [length 0005], KeyUpdate"

	send(startupMessage(t, ferrytest.User, "app"))
	waitFor("the client's login", readyForQuery, 1)

	// The session waits as a bare descriptor, its keys in the parked
	// tls13.Conn; built with pgferry_notls13, crypto/tls keeps the
	// connection and handles the KeyUpdate, and the test checks that.
	wantParked := map[bool]int{true: 1, false: 0}[tls13.Enabled]
	for i, tc := range []struct {
		command, query, answer string
		requested              bool
	}{
		{"K\n", "select (6*7)::text || ' after a key update pgferry was asked to answer'", "42 after a key update pgferry was asked to answer", true},
		{"k\n", "select (6*7+1)::text || ' after a key update pgferry was not asked to answer'", "43 after a key update pgferry was not asked to answer", false},
	} {
		ferrytest.Eventually(t, parkWait, "the idle session to park", func() (bool, error) {
			return f.Server.Snapshot().ParkedClients == 1 && router.ParkedWithoutConn(f.Server) == wantParked, nil
		})
		before := strings.Count(out.String(), serverKeyUpdate)
		send([]byte(tc.command))
		// s_client has sent the KeyUpdate (and takes the next input as
		// data, not as part of its command).
		waitFor("s_client's KeyUpdate", "KEYUPDATE\n", i+1)
		if tc.requested {
			// The KeyUpdate alone resumes the session, which answers with
			// one of its own before anything else.
			waitFor("pgferry's KeyUpdate", serverKeyUpdate, before+1)
		}
		var q []byte
		for _, m := range []pgproto3.FrontendMessage{
			&pgproto3.Parse{Query: tc.query},
			&pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{},
		} {
			q = append(q, encode(t, m)...)
		}
		send(q)
		waitFor("the answer to the query after the KeyUpdate", tc.answer, 1)
		waitFor("the query's ReadyForQuery", readyForQuery, i+2)
		want := before
		if tc.requested {
			want++
		}
		if n := strings.Count(out.String(), serverKeyUpdate); n != want {
			t.Fatalf("pgferry sent %d KeyUpdates; want %d", n-before, want-before)
		}
	}
	entries, handbacks := loopCounters(t, f)
	if loop && tls13.Enabled && (entries == 0 || handbacks != 0) {
		t.Fatalf("%d entries into the relay loop and %d hand-backs; want the loop to serve the session throughout", entries, handbacks)
	}
	if !loop && entries != 0 {
		t.Fatalf("with the relay loop off, the session entered it %d times", entries)
	}
}

package router_test

import (
	"encoding/base64"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/auth"
	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/protocol"
)

func TestMalformedMessagesAfterLoginEndTheSessionWithoutLeakingItsTransaction(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, db := configWithOwnDatabase(t)
	f := ferrytest.Start(t, cfg)

	tests := []struct {
		name string
		// bytes sent after the client opened a transaction
		garbage []byte
		// closeAfter closes the client right after the garbage (no answer
		// can be read then).
		closeAfter bool
		wantMsg    string
	}{
		{name: "a length below 4", garbage: []byte{'Q', 0, 0, 0, 2}, wantMsg: "invalid message length"},
		{name: "a negative length", garbage: []byte{'Q', 0xff, 0xff, 0xff, 0xf0}, wantMsg: "invalid message length"},
		{name: "an unknown message type", garbage: []byte{'z', 0, 0, 0, 4}, wantMsg: "invalid frontend message type"},
		// PostgreSQL rejects an unknown type byte before reading the body
		// (SocketBackend in src/backend/tcop/postgres.c); pgferry must not
		// wait for a body that a desynchronised client never sends. A
		// StartupMessage sent after login reads exactly like this: type
		// 0x00 and a length made of its own length and version bytes.
		{name: "a startup packet after login", garbage: startupMessage(t, "app", "app"), wantMsg: "invalid frontend message type"},
		{name: "a truncated frame and a close", garbage: []byte{'Q', 0, 0, 0, 100, 's', 'e', 'l'}, closeAfter: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pc := ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
			if _, err := pc.Exec(ctx, "begin; create temp table t (x int); insert into t values (1)").ReadAll(); err != nil {
				t.Fatal(err)
			}
			c := hijack(t, pc)
			sendRaw(t, c, tc.garbage)
			if tc.closeAfter {
				c.Close()
			} else {
				frames := readUntilClosed(t, c)
				errs := errorsIn(frames)
				if len(errs) != 1 || errs[0]['S'] != "FATAL" || errs[0]['C'] != "08P01" || !strings.Contains(errs[0]['M'], tc.wantMsg) {
					t.Fatalf("got %s, want one FATAL 08P01 %q", describe(frames), tc.wantMsg)
				}
			}
			waitNoBusyBackends(t, ctx, db)
			ferrytest.Eventually(t, 10*time.Second, "the session to end", func() (bool, error) {
				return f.Server.Snapshot().Clients == 0, nil
			})
			assertServes(t, ctx, f)
		})
	}
	assertNoPanic(t, f)
}

// saslStart connects raw, sends a startup packet and reads the
// AuthenticationSASL request.
func saslStart(t *testing.T, f *ferrytest.Ferry) net.Conn {
	t.Helper()
	c := dialFerry(t, f)
	sendRaw(t, c, startupMessage(t, ferrytest.User, "app"))
	frames, _, err := readFrames(c, 10*time.Second, func(fr frame) bool { return fr.typ == 'R' })
	if err != nil || len(frames) != 1 || frames[0].typ != 'R' || len(frames[0].body) < 4 || frames[0].body[3] != 10 {
		t.Fatalf("expected AuthenticationSASL, got %s (%v)", describe(frames), err)
	}
	return c
}

// assertAuthRefused expects one FATAL 08P01 or 28P01 and a closed
// connection.
func assertAuthRefused(t *testing.T, c net.Conn) {
	t.Helper()
	frames := readUntilClosed(t, c)
	errs := errorsIn(frames)
	if len(errs) != 1 || errs[0]['S'] != "FATAL" || (errs[0]['C'] != "08P01" && errs[0]['C'] != "28P01") {
		t.Fatalf("got %s, want FATAL 08P01 or 28P01 and a close", describe(frames))
	}
	for _, fr := range frames {
		if fr.typ == 'R' && len(fr.body) >= 4 && fr.body[3] == 0 {
			t.Fatalf("garbage SCRAM was accepted: %s", describe(frames))
		}
	}
}

// scramClientFirst sends a genuine SCRAM-SHA-256 client-first message on c
// (after saslStart) and returns the server-first message of the
// AuthenticationSASLContinue that answers it.
func scramClientFirst(t *testing.T, c net.Conn) string {
	t.Helper()
	sc := auth.NewSCRAMClient(ferrytest.Password)
	sendRaw(t, c, encode(t, &pgproto3.SASLInitialResponse{AuthMechanism: sc.Mechanism(), Data: sc.ClientFirst()}))
	frames, _, err := readFrames(c, 10*time.Second, func(fr frame) bool { return fr.typ == 'R' || fr.typ == 'E' })
	if err != nil || len(frames) != 1 || frames[0].typ != 'R' || frames[0].body[3] != 11 {
		t.Fatalf("expected AuthenticationSASLContinue, got %s (%v)", describe(frames), err)
	}
	return string(frames[0].body[4:])
}

func TestGarbageInTheSCRAMExchangeIsRefusedAndTheConnectionClosed(t *testing.T) {
	t.Parallel()
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))

	t.Run("an unknown mechanism name", func(t *testing.T) {
		c := saslStart(t, f)
		sendRaw(t, c, encode(t, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-1", Data: []byte("n,,n=,r=abcdefgh")}))
		assertAuthRefused(t, c)
	})

	t.Run("a client-first message that is not SCRAM", func(t *testing.T) {
		c := saslStart(t, f)
		sendRaw(t, c, encode(t, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("\x00\xff garbage")}))
		assertAuthRefused(t, c)
	})

	t.Run("a client-final message with a wrong nonce", func(t *testing.T) {
		c := saslStart(t, f)
		serverFirst := scramClientFirst(t, c)
		if !strings.HasPrefix(serverFirst, "r=") {
			t.Fatalf("server-first message %q", serverFirst)
		}
		proof := base64.StdEncoding.EncodeToString(make([]byte, 32))
		final := "c=biws,r=not-the-nonce-the-server-sent,p=" + proof
		sendRaw(t, c, encode(t, &pgproto3.SASLResponse{Data: []byte(final)}))
		assertAuthRefused(t, c)
	})

	t.Run("a client-final message with a forged proof", func(t *testing.T) {
		c := saslStart(t, f)
		nonce, _, _ := strings.Cut(strings.TrimPrefix(scramClientFirst(t, c), "r="), ",")
		final := "c=biws,r=" + nonce + ",p=" + base64.StdEncoding.EncodeToString(make([]byte, 32))
		sendRaw(t, c, encode(t, &pgproto3.SASLResponse{Data: []byte(final)}))
		assertAuthRefused(t, c)
	})

	t.Run("a password message instead of SASL", func(t *testing.T) {
		c := saslStart(t, f)
		sendRaw(t, c, encode(t, &pgproto3.PasswordMessage{Password: ferrytest.Password}))
		assertAuthRefused(t, c)
	})

	t.Run("a query instead of SASL", func(t *testing.T) {
		c := saslStart(t, f)
		sendRaw(t, c, encode(t, &pgproto3.Query{String: "select 1"}))
		assertAuthRefused(t, c)
	})

	t.Run("an initial response whose data length does not match", func(t *testing.T) {
		c := saslStart(t, f)
		body := append([]byte("SCRAM-SHA-256\x00"), 0, 0, 0, 99)
		body = append(body, "n,,n=,r=abc"...)
		sendRaw(t, c, append([]byte{'p', 0, 0, 0, byte(4 + len(body))}, body...))
		assertAuthRefused(t, c)
	})

	t.Run("a SASL message longer than any token", func(t *testing.T) {
		c := saslStart(t, f)
		sendRaw(t, c, []byte{'p', 0, 0x10, 0, 0}) // 1 MiB announced, nothing sent
		assertAuthRefused(t, c)
	})

	assertServes(t, testContext(t), f)
	assertNoPanic(t, f)
}

func TestAClientSendingItsPasswordAndFirstQueryWithTheStartupPacketIsServed(t *testing.T) {
	t.Parallel()
	cfg := ferrytest.Config(t, cluster)
	cfg.AuthType = "plain"
	f := ferrytest.Start(t, cfg)
	// PostgreSQL reads whatever arrived with the login; so must pgferry,
	// from the buffer it read the login into.
	c := dialFerry(t, f)
	var burst []byte
	burst = append(burst, startupMessage(t, ferrytest.User, "app")...)
	burst = append(burst, encode(t, &pgproto3.PasswordMessage{Password: ferrytest.Password})...)
	burst = append(burst, encode(t, &pgproto3.Query{String: "select 'pipelined'"})...)
	sendRaw(t, c, burst)
	frames, _, err := readFrames(c, 10*time.Second, func(fr frame) bool { return fr.typ == 'C' || fr.typ == 'E' })
	if err != nil {
		t.Fatalf("got %s (%v)", describe(frames), err)
	}
	var row string
	for _, fr := range frames {
		if fr.typ == 'D' {
			row = string(fr.body)
		}
	}
	if !strings.Contains(row, "pipelined") || frames[len(frames)-1].typ != 'C' {
		t.Fatalf("the query sent with the login was not answered: %s", describe(frames))
	}
}

func TestBytesSentAfterAnSSLRequestBeforeTheHandshakeAreRefused(t *testing.T) {
	t.Parallel()
	cfg := ferrytest.Config(t, cluster)
	offerClientTLS(cfg, "prefer")
	f := ferrytest.Start(t, cfg)
	// A man in the middle could append plaintext to the SSLRequest that
	// would then pass as sent over TLS (CVE-2021-23214 in PostgreSQL).
	c := dialFerry(t, f)
	sendRaw(t, c, append(protocol.AppendSSLRequest(nil), startupMessage(t, ferrytest.User, "app")...))
	frames, closed, err := readFrames(c, 10*time.Second, nil)
	if !closed || len(frames) != 1 || frames[0].typ != 'E' {
		t.Fatalf("got %s (closed %v, %v), want one ErrorResponse and the connection closed", describe(frames), closed, err)
	}
	if e := errorFields(frames[0].body); e['C'] != "08P01" || e['S'] != "FATAL" || !strings.Contains(e['M'], "unencrypted data after SSL request") {
		t.Fatalf("got %s, want FATAL 08P01 about unencrypted data after the SSL request", describe(frames))
	}
}

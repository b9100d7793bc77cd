package tls13

import (
	"crypto/tls"
	"errors"
	"io"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// lastSeq is the last sequence number a Conn seals or opens a record
// under. RFC 8446 5.3 forbids the 64-bit counter to wrap; a Conn, like
// crypto/tls (incSeq) and OpenSSL (tls13_enc), counts a record only once
// the number after it exists, so 2^64-1 is never used and the counter
// never holds a number twice.
const lastSeq = math.MaxUint64 - 1

// wireCount is a socket that counts the bytes written to it.
type wireCount struct {
	net.Conn
	mu sync.Mutex
	n  int
}

func (c *wireCount) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	c.n += n
	c.mu.Unlock()
	return n, err
}

func (c *wireCount) written() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// readString reads exactly len(want) bytes from c and fails the test
// unless they are want.
func readString(t *testing.T, c *Conn, want string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != want {
		t.Fatalf("read %q, %v; want %q", got, err, want)
	}
}

func TestTheLastSequenceNumberCarriesARecordBothWaysAndTheNextWriteIsRefusedWithoutTouchingTheWire(t *testing.T) {
	server, client := mirrored(t, tls.TLS_AES_128_GCM_SHA256)
	server.in.seq, client.out.seq = lastSeq, lastSeq
	server.out.seq, client.in.seq = lastSeq, lastSeq

	// The last record each way is sealed, sent and opened by the peer.
	if _, err := client.Write([]byte("last up")); err != nil {
		t.Fatalf("the client's last record: %v", err)
	}
	readString(t, server, "last up")
	if _, err := server.Write([]byte("last down")); err != nil {
		t.Fatalf("the server's last record: %v", err)
	}
	readString(t, client, "last down")

	// The next one would need a sequence number past 2^64-1: refused, and
	// nothing reaches the socket, now or later (Close sends no
	// close_notify: it would need a sequence number too).
	wire := &wireCount{Conn: server.raw}
	server.raw = wire
	for _, what := range []string{"one too many", "another"} {
		_, err := server.Write([]byte(what))
		if err == nil || !strings.Contains(err.Error(), "sequence numbers exhausted") {
			t.Fatalf("writing %q past the last sequence number: %v; want the sequence numbers exhausted", what, err)
		}
	}
	if server.out.seq != spentSeq {
		t.Fatalf("the write counter holds %d after running out; want it left at 2^64-1, never wrapped", server.out.seq)
	}
	server.Close()
	if n := wire.written(); n != 0 {
		t.Fatalf("%d bytes went out after the sequence numbers ran out; want none", n)
	}
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := client.Read(make([]byte, 64)); !errors.Is(err, io.EOF) {
		t.Fatalf("the client read %d bytes, %v after the server ran out; want only the end of the stream", n, err)
	}
}

func TestARecordPastTheLastSequenceNumberIsRefusedAndEndsTheConnection(t *testing.T) {
	server, client := mirrored(t, tls.TLS_CHACHA20_POLY1305_SHA256)
	server.in.seq, client.out.seq = lastSeq, lastSeq
	if _, err := client.Write([]byte("last")); err != nil {
		t.Fatal(err)
	}
	readString(t, server, "last")
	// A peer that kept counting (client.Write refuses to, so the record is
	// built by hand) sends one more.
	if err := client.writePadded([]byte("one too many"), 0); err != nil {
		t.Fatal(err)
	}
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := server.Read(make([]byte, 64))
	if err == nil || !strings.Contains(err.Error(), "exhausted the sequence numbers") {
		t.Fatalf("a record past the last sequence number read as %d bytes, %v; want the sequence numbers exhausted", n, err)
	}
	if _, again := server.Read(make([]byte, 64)); again != err {
		t.Fatalf("the next read returned %v; want the same failure", again)
	}
	// The client is told, with an alert under the server's own keys.
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = client.Read(make([]byte, 64))
	if ae, ok := errors.AsType[tls.AlertError](err); !ok || ae != alertInternalError {
		t.Fatalf("the client read %v; want an internal_error alert", err)
	}
}

func TestAKeyUpdateRestartsTheSequenceNumbersSoRecordsCarryOnPastTheLimit(t *testing.T) {
	for _, s := range suites {
		t.Run(tls.CipherSuiteName(s.id), func(t *testing.T) {
			server, client := mirrored(t, s.id)
			server.in.seq, client.out.seq = lastSeq, lastSeq
			server.out.seq, client.in.seq = lastSeq, lastSeq

			// The client's KeyUpdate, asking for the server's, goes out
			// under the last sequence number of the old keys; so does the
			// server's answer.
			if err := client.sendKeyUpdate(true); err != nil {
				t.Fatal(err)
			}
			if _, err := client.Write([]byte("up")); err != nil {
				t.Fatalf("the client's first record under new keys: %v", err)
			}
			readString(t, server, "up")
			if _, err := server.Write([]byte("down")); err != nil {
				t.Fatalf("the server's first record under new keys: %v", err)
			}
			readString(t, client, "down")
			// RFC 8446 4.6.3 and 5.3: new keys start at sequence number 0;
			// one record each way since.
			for name, seq := range map[string]uint64{"server in": server.in.seq, "server out": server.out.seq, "client in": client.in.seq, "client out": client.out.seq} {
				if seq != 1 {
					t.Errorf("%s: sequence number %d after one record under new keys; want 1", name, seq)
				}
			}
		})
	}
}

func TestAParkedAndResumedConnectionTakesAKeyUpdateThatArrivedWhileParked(t *testing.T) {
	server, client := mirrored(t, tls.TLS_AES_256_GCM_SHA384)
	if _, err := client.Write([]byte("before")); err != nil {
		t.Fatal(err)
	}
	readString(t, server, "before")
	if _, err := server.Write([]byte("ack")); err != nil {
		t.Fatal(err)
	}
	readString(t, client, "ack")
	oldIn, oldOut := server.in.key, server.out.key

	raw := server.raw
	server.Park()
	// While parked, the client updates its keys, asks for the server's
	// update, and sends a query under its new keys.
	if err := client.sendKeyUpdate(true); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Write([]byte("query")); err != nil {
		t.Fatal(err)
	}
	server.Resume(raw)
	readString(t, server, "query")
	if server.in.key == oldIn || server.out.key == oldOut {
		t.Fatal("the resumed connection did not move to new keys both ways")
	}
	// Its answer goes out after its own KeyUpdate, under its new keys.
	if _, err := server.Write([]byte("answer")); err != nil {
		t.Fatal(err)
	}
	readString(t, client, "answer")
	if client.in.key != server.out.key {
		t.Fatal("the client did not take the server's KeyUpdate")
	}
	if client.out.key != server.in.key {
		t.Fatal("the two sides disagree on the client's keys")
	}
}

func TestKeyUpdatesRequestedBeforeTheServersNextDataGetOneReply(t *testing.T) {
	server, client := mirrored(t, tls.TLS_AES_128_GCM_SHA256)
	exchange := func(what string) {
		t.Helper()
		go client.Write([]byte("up:" + what))
		up := make([]byte, 3+len(what))
		if _, err := io.ReadFull(server, up); err != nil || string(up) != "up:"+what {
			t.Fatalf("%s, client to server: %q, %v", what, up, err)
		}
		go server.Write([]byte("dn:" + what))
		dn := make([]byte, 3+len(what))
		if _, err := io.ReadFull(client, dn); err != nil || string(dn) != "dn:"+what {
			t.Fatalf("%s, server to client: %q, %v", what, dn, err)
		}
	}
	for round := 0; round < 2; round++ {
		once := server.out
		once.update(server.suite)
		for i := 0; i < 3; i++ {
			if err := client.sendKeyUpdate(true); err != nil {
				t.Fatal(err)
			}
		}
		exchange("three requests")
		if server.out.key != once.key {
			t.Fatalf("round %d: the server's sending key is not the one a single update gives", round)
		}
	}
}

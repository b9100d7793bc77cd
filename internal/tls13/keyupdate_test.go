package tls13

import (
	"crypto/tls"
	"testing"
	"time"
)

// A KeyUpdate that asks for the server's is answered from Read. When that
// answer cannot be written (here a write deadline that passed, as a doomed
// session's does on a client that stops reading), the failure belongs to
// the writing side, as in crypto/tls (handleKeyUpdate): Read goes on with
// the client's data, and the next Write reports it. Returned by Read, a
// write's timeout would read as a read timeout, which callers retry (the
// router's read loop takes it for a wake) while Read returns it forever.
func TestAKeyUpdateAnswerThatCannotBeWrittenFailsTheNextWriteNotTheRead(t *testing.T) {
	server, client := mirrored(t, tls.TLS_AES_128_GCM_SHA256)
	if err := client.sendKeyUpdate(true); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Write([]byte("query")); err != nil {
		t.Fatal(err)
	}
	server.SetWriteDeadline(time.Now().Add(-time.Second))
	readString(t, server, "query")
	if _, err := server.Write([]byte("answer")); err == nil {
		t.Fatal("a write after the KeyUpdate answer failed succeeded: its data would go out without the answer")
	}
	// Reading goes on: it times out on its own deadline, and recovers.
	server.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := server.Read(make([]byte, 8)); !isTimeout(err) {
		t.Fatalf("a read with nothing sent: %v; want its own timeout", err)
	}
	if _, err := client.Write([]byte("more")); err != nil {
		t.Fatal(err)
	}
	readString(t, server, "more")
}

package router

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/pgferry/pgferry/internal/tls13"
	"github.com/pgferry/pgferry/protocol"
)

// tlsPair returns the server and client ends of a TLS connection over
// loopback TCP, handshake done.
func tlsPair(t *testing.T) (raw net.Conn, server, client *tls.Conn) {
	t.Helper()
	raw, cc := tcpPair(t)
	server = tls.Server(raw, &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}})
	client = tls.Client(cc, &tls.Config{InsecureSkipVerify: true})
	handshakeBoth(t, server, client)
	t.Cleanup(func() { server.Close(); client.Close() })
	return raw, server, client
}

// selfSigned is a throwaway certificate for localhost.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tcpPair returns the accepted and the dialled end of a loopback TCP
// connection.
func tcpPair(t *testing.T) (accepted, dialled net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		ch <- c
	}()
	dialled, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	accepted = <-ch
	t.Cleanup(func() { accepted.Close(); dialled.Close() })
	return accepted, dialled
}

// handshakeBoth runs the two ends' handshakes.
func handshakeBoth(t *testing.T, server, client *tls.Conn) {
	t.Helper()
	errs := make(chan error, 1)
	go func() { errs <- client.Handshake() }()
	if err := server.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
}

func TestBytesTheTLSLayerHoldsKeepASessionFromParkingAndMoveToTheReader(t *testing.T) {
	raw, server, client := tlsPair(t)
	ss := &session{raw: raw, conn: server, tls: true, rd: protocol.NewReader(server)}
	ss.rd.Small = make([]byte, smallBufSize)

	// Nothing sent: nothing held, and the read deadline is back to none.
	if ss.tlsHoldsInput() {
		t.Fatal("an idle TLS connection was reported to hold input")
	}
	// One record of 700 bytes of which the session read 100: TLS holds the
	// rest, which socket readiness would never announce.
	msg := make([]byte, 700)
	for i := range msg {
		msg[i] = byte(i)
	}
	if _, err := client.Write(msg); err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 100)
	if _, err := server.Read(head); err != nil {
		t.Fatal(err)
	}
	if !ss.tlsHoldsInput() {
		t.Fatal("600 bytes held by TLS were not noticed")
	}
	if got := ss.rd.Buffered(); got == 0 {
		t.Fatal("the bytes TLS held were not moved into the Reader")
	}
	// Once what TLS held is read, a read waits for the client again: the
	// probe put the read deadline back.
	rest := make([]byte, 1024)
	for total := ss.rd.Buffered(); total < 600; {
		n, err := server.Read(rest)
		if err != nil {
			t.Fatalf("read of what TLS held: %v", err)
		}
		total += n
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		client.Write([]byte("more"))
	}()
	n, err := server.Read(rest)
	if err != nil || string(rest[:n]) != "more" {
		t.Fatalf("read after the probe: %q, %v; want to wait for the client's next bytes", rest[:n], err)
	}
}

func TestATLS13SessionHoldingClientBytesDoesNotPark(t *testing.T) {
	if !tls13.Enabled {
		t.Skip("built with pgferry_notls13")
	}
	raw, cc := tcpPair(t)
	cfg := tls13.ServerConfig(&tls.Config{Certificates: []tls.Certificate{selfSigned(t)}, SessionTicketsDisabled: true})
	tap := tls13.NewTap(raw)
	server := tls.Server(tap, cfg)
	client := tls.Client(cc, &tls.Config{InsecureSkipVerify: true})
	handshakeBoth(t, server, client)
	conn := tap.Takeover(server, cfg)
	if conn == nil {
		t.Fatal("not taken over")
	}
	ss := &session{raw: raw, conn: conn, tls: true}
	if ss.tlsHoldsInput() {
		t.Fatal("an idle TLS 1.3 connection was reported to hold input")
	}
	// One record of 700 bytes of which the session read 100: the rest is
	// the Conn's, which socket readiness would never announce.
	client.Write(make([]byte, 700))
	if _, err := io.ReadFull(conn, make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	if !ss.tlsHoldsInput() {
		t.Fatal("600 bytes held by the TLS 1.3 connection were not noticed")
	}
	if _, err := io.ReadFull(conn, make([]byte, 600)); err != nil {
		t.Fatal(err)
	}
	if ss.tlsHoldsInput() {
		t.Fatal("a drained TLS 1.3 connection was reported to hold input")
	}
}

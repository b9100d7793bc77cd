package sockio_test

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

	"github.com/pgferry/pgferry/internal/sockio"
)

func TestANoWaitReadReturnsAtOnceAndTheNextOneGetsTheData(t *testing.T) {
	if !isLinux {
		t.Skip("raw socket calls are Linux-only")
	}
	w, p := pair(t)
	if !sockio.SetNoWait(w, true) {
		t.Fatal("SetNoWait refused a wrapped connection")
	}
	buf := make([]byte, 16)
	if n, err := w.Read(buf); n != 0 || err != sockio.ErrWouldBlock {
		t.Fatalf("a read with nothing to read: %d, %v; want ErrWouldBlock", n, err)
	}
	p.Write([]byte("hello"))
	var got []byte
	for len(got) < 5 {
		n, err := w.Read(buf)
		if err != nil && err != sockio.ErrWouldBlock {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != "hello" {
		t.Fatalf("read %q", got)
	}
	// Waiting again: a read blocks until the peer writes.
	sockio.SetNoWait(w, false)
	done := make(chan string, 1)
	go func() {
		n, _ := w.Read(buf)
		done <- string(buf[:n])
	}()
	select {
	case s := <-done:
		t.Fatalf("a waiting read returned %q before the peer wrote", s)
	case <-time.After(50 * time.Millisecond):
	}
	p.Write([]byte("again"))
	if s := <-done; s != "again" {
		t.Fatalf("the waiting read got %q", s)
	}
}

func TestSetNoWaitRefusesAConnectionWrapLeftAsItWas(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if sockio.SetNoWait(sockio.Wrap(a), true) {
		t.Fatal("SetNoWait accepted a pipe")
	}
}

func TestUnderTLSANoWaitReadLeavesTheConnectionUsable(t *testing.T) {
	if !isLinux {
		t.Skip("raw socket calls are Linux-only")
	}
	w, p := pair(t)
	cli, srv := tlsOver(t, w, p)
	sockio.SetNoWait(w, true)
	buf := make([]byte, 64)
	if _, err := cli.Read(buf); err != sockio.ErrWouldBlock {
		t.Fatalf("a TLS read with nothing to read: %v; want ErrWouldBlock", err)
	}
	if _, err := srv.Write([]byte("after the stall")); err != nil {
		t.Fatal(err)
	}
	var got []byte
	deadline := time.Now().Add(10 * time.Second) // a hang guard, not a timing
	for len(got) < len("after the stall") && time.Now().Before(deadline) {
		n, err := cli.Read(buf)
		if err != nil && err != sockio.ErrWouldBlock {
			t.Fatalf("the TLS connection failed after a read that would block: %v", err)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != "after the stall" {
		t.Fatalf("read %q", got)
	}
}

func TestARawDescriptorReadsAndWritesWithoutWaiting(t *testing.T) {
	if !isLinux {
		t.Skip("raw socket calls are Linux-only")
	}
	w, p := pair(t)
	p.Write([]byte("x"))
	if _, err := w.Read(make([]byte, 1)); err != nil { // FD knows it from here
		t.Fatal(err)
	}
	fd, _ := sockio.FD(w)
	r := &sockio.Raw{FD: fd}
	buf := make([]byte, 1<<16)
	if n, err := r.Read(buf); n != 0 || err != sockio.ErrWouldBlock {
		t.Fatalf("a raw read with nothing to read: %d, %v", n, err)
	}
	// Write until the socket is full: the last write says how much it took.
	total := 0
	for {
		n, err := r.Write(buf)
		total += n
		if err == sockio.ErrWouldBlock {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if total > 1<<30 {
			t.Fatal("the socket never filled up")
		}
	}
	drained := make(chan struct{})
	go func() {
		io.Copy(io.Discard, io.LimitReader(p, int64(total)))
		close(drained)
	}()
	p.Write([]byte("y"))
	var got []byte
	for len(got) == 0 {
		n, err := r.Read(buf)
		if err != nil && err != sockio.ErrWouldBlock {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != "y" {
		t.Fatalf("raw read %q", got)
	}
	<-drained // closing with unread bytes would reset the connection
	p.Close()
	for {
		_, err := r.Read(buf)
		if err == io.EOF {
			break
		}
		if err != sockio.ErrWouldBlock {
			t.Fatalf("a raw read after the peer left: %v, want io.EOF", err)
		}
	}
}

// tlsOver runs a TLS handshake between a client on c and a server on p
// (a self-signed certificate) and returns both ends.
func tlsOver(t *testing.T, c, p net.Conn) (cli, srv *tls.Conn) {
	t.Helper()
	srv = tls.Server(p, &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}})
	cli = tls.Client(c, &tls.Config{InsecureSkipVerify: true})
	hang := time.Now().Add(20 * time.Second) // a hang guard
	c.SetDeadline(hang)
	p.SetDeadline(hang)
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	if err := cli.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Time{})
	p.SetDeadline(time.Time{})
	return cli, srv
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sockio"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

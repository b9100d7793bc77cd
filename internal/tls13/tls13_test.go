package tls13

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/fips140"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"io"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"
)

// testCert is a throwaway self-signed certificate for 127.0.0.1.
func testCert(t testing.TB) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// loopback returns both ends of a loopback TCP connection.
func loopback(t testing.TB) (server, client net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// takenOver runs a handshake between a crypto/tls client (clientCfg) and a
// crypto/tls server over a Tap, then takes the server side over. afterHandshake,
// if set, runs on the client right after its handshake, before the server
// takes over (a client that sends at once).
func takenOver(t *testing.T, base *tls.Config, clientCfg *tls.Config, afterHandshake func(*tls.Conn)) (*Conn, *tls.Conn, *Tap) {
	t.Helper()
	srv, cfg, client, tap := handshake(t, base, clientCfg, afterHandshake)
	return tap.Takeover(srv, cfg), client, tap
}

// handshake is takenOver up to the takeover.
func handshake(t testing.TB, base *tls.Config, clientCfg *tls.Config, afterHandshake func(*tls.Conn)) (*tls.Conn, *tls.Config, *tls.Conn, *Tap) {
	t.Helper()
	raw, cc := loopback(t)
	if afterHandshake != nil {
		// The server reads the client's Finished late, when what the
		// client sent after it has arrived too.
		raw = &lateConn{Conn: raw}
	}
	tap := NewTap(raw)
	cfg := ServerConfig(base)
	srv := tls.Server(tap, cfg)
	client := tls.Client(&cutConn{Conn: cc}, clientCfg)
	errs := make(chan error, 1)
	go func() {
		err := client.Handshake()
		if err == nil && afterHandshake != nil {
			afterHandshake(client)
		}
		errs <- err
	}()
	if err := srv.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	return srv, cfg, client, tap
}

func serverConfig(t testing.TB) *tls.Config {
	if !Enabled || fips140.Enabled() {
		t.Skip("takeover off: built with pgferry_notls13, or FIPS 140 mode")
	}
	return &tls.Config{Certificates: []tls.Certificate{testCert(t)}, MinVersion: tls.VersionTLS12, SessionTicketsDisabled: true}
}

func clientConfig() *tls.Config { return &tls.Config{InsecureSkipVerify: true} }

// pattern is n bytes that differ from one offset to the next.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}

func TestATakenOverConnectionCarriesDataBothWaysInMessagesOfEverySize(t *testing.T) {
	conn, client, _ := takenOver(t, serverConfig(t), clientConfig(), nil)
	if conn == nil {
		t.Fatal("a TLS 1.3 connection was not taken over")
	}
	for _, n := range []int{1, 5, 100, 2000, maxPlaintext - 1, maxPlaintext, maxPlaintext + 1, 100_000} {
		up, down := pattern(n, 1), pattern(n, 2)
		go client.Write(up)
		got := make([]byte, n)
		if _, err := io.ReadFull(conn, got); err != nil {
			t.Fatalf("%d bytes from the client: %v", n, err)
		}
		if !bytes.Equal(got, up) {
			t.Fatalf("%d bytes from the client arrived changed", n)
		}
		go conn.Write(down)
		if _, err := io.ReadFull(client, got); err != nil {
			t.Fatalf("%d bytes to the client: %v", n, err)
		}
		if !bytes.Equal(got, down) {
			t.Fatalf("%d bytes to the client arrived changed", n)
		}
	}
	if conn.Pending() {
		t.Fatal("a drained connection reports pending bytes")
	}
	if conn.rbuf != nil || cap(conn.plain) != 0 {
		t.Fatal("a drained connection kept its read buffer")
	}
	conn.Park()
	if cap(conn.plain) != 0 || conn.in.aead != nil || conn.out.aead != nil {
		t.Fatal("a parked connection kept a buffer or its ciphers")
	}
}

func TestWhatTheClientSendsRightAfterItsHandshakeIsLeftForTheTakenOverConnection(t *testing.T) {
	early := []byte("sent with the client's Finished")
	conn, _, _ := takenOver(t, serverConfig(t), clientConfig(), func(c *tls.Conn) {
		c.Write(early)
	})
	if conn == nil {
		t.Fatal("not taken over")
	}
	got := make([]byte, len(early))
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(conn, got); err != nil || !bytes.Equal(got, early) {
		t.Fatalf("the early bytes: %q, %v", got, err)
	}
}

func TestTLS12AndSessionTicketsStayWithCryptoTLS(t *testing.T) {
	c12 := clientConfig()
	c12.MaxVersion = tls.VersionTLS12
	if conn, client, _ := takenOver(t, serverConfig(t), c12, nil); conn != nil {
		t.Fatal("a TLS 1.2 connection was taken over")
	} else if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	tickets := serverConfig(t)
	tickets.SessionTicketsDisabled = false
	if conn, _, _ := takenOver(t, tickets, clientConfig(), nil); conn != nil {
		t.Fatal("a connection whose server may have sent session tickets was taken over")
	}
}

func TestATakeoverLeavesNoSecretInTheTap(t *testing.T) {
	conn, _, tap := takenOver(t, serverConfig(t), clientConfig(), nil)
	if conn == nil {
		t.Fatal("not taken over")
	}
	if tap.keys != (keyLog{}) {
		t.Fatal("the tap still holds the traffic secrets")
	}
}

// lateConn is a server socket whose reads after its first write wait a
// little first.
type lateConn struct {
	net.Conn
	wrote bool
}

func (c *lateConn) Write(p []byte) (int, error) {
	c.wrote = true
	return c.Conn.Write(p)
}

func (c *lateConn) Read(p []byte) (int, error) {
	if c.wrote {
		time.Sleep(100 * time.Millisecond)
	}
	return c.Conn.Read(p)
}

// cutConn is a client socket that can send the next write in two parts,
// the second when the test says so.
type cutConn struct {
	net.Conn
	cut  int           // the next write stops after this many bytes
	rest chan struct{} // closed to send the rest
}

func (c *cutConn) Write(p []byte) (int, error) {
	if c.cut <= 0 || c.cut >= len(p) {
		return c.Conn.Write(p)
	}
	n, err := c.Conn.Write(p[:c.cut])
	c.cut = 0
	if err != nil {
		return n, err
	}
	<-c.rest
	m, err := c.Conn.Write(p[n:])
	return n + m, err
}

func TestAReadTimeoutInsideARecordLosesNothing(t *testing.T) {
	conn, client, _ := takenOver(t, serverConfig(t), clientConfig(), nil)
	if conn == nil {
		t.Fatal("not taken over")
	}
	cut := client.NetConn().(*cutConn)
	cut.cut, cut.rest = 100, make(chan struct{})
	want := pattern(300, 3)
	go client.Write(want)

	conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	buf := make([]byte, 300)
	if n, err := conn.Read(buf); !isTimeout(err) {
		t.Fatalf("reading half a record: %d bytes, %v; want a timeout", n, err)
	}
	if !conn.Pending() {
		t.Fatal("half a record read is not reported as pending")
	}
	close(cut.rest)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(conn, buf); err != nil || !bytes.Equal(buf, want) {
		t.Fatalf("after the timeout: %v (equal: %v)", err, bytes.Equal(buf, want))
	}
}

func TestATamperedRecordEndsTheConnectionWithBadRecordMAC(t *testing.T) {
	conn, client, _ := takenOver(t, serverConfig(t), clientConfig(), nil)
	if conn == nil {
		t.Fatal("not taken over")
	}
	forged := append([]byte{typeAppData, 3, 3, 0, 30}, pattern(30, 9)...)
	if _, err := client.NetConn().Write(forged); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Read(make([]byte, 10)); err == nil || !bytes.Contains([]byte(err.Error()), []byte("authentication")) {
		t.Fatalf("a forged record read as %v", err)
	}
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := client.Read(make([]byte, 10))
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("bad record MAC")) {
		t.Fatalf("the client was told %v, want a bad_record_mac alert", err)
	}
	if _, err := conn.Write([]byte("more")); err == nil {
		t.Fatal("a failed connection still writes")
	}
}

func TestCloseNotifyFromTheClientIsTheEndOfTheStream(t *testing.T) {
	conn, client, _ := takenOver(t, serverConfig(t), clientConfig(), nil)
	if conn == nil {
		t.Fatal("not taken over")
	}
	client.Write([]byte("last"))
	client.Close()
	got, err := io.ReadAll(conn)
	if err != nil || string(got) != "last" {
		t.Fatalf("read %q, %v; want \"last\" then io.EOF", got, err)
	}
	if conn.rbuf != nil {
		t.Fatal("an ended connection kept its read buffer")
	}
}

// mirrored returns two Conns over loopback whose secrets match, so that
// each is the other's peer: a client side this package does not ship, to
// test what crypto/tls cannot be made to send (KeyUpdate) and every suite.
func mirrored(t *testing.T, id uint16) (server, client *Conn) {
	t.Helper()
	if fips140.Enabled() {
		t.Skip("FIPS 140 mode: this package's AEADs are not used")
	}
	s := suiteByID(id)
	n := s.hash().Size()
	cs, ss := pattern(n, 4), pattern(n, 5)
	a, b := loopback(t)
	server, client = &Conn{raw: a, suite: s}, &Conn{raw: b, suite: s}
	server.in.set(s, cs)
	server.out.set(s, ss)
	client.in.set(s, ss)
	client.out.set(s, cs)
	return server, client
}

// sendKeyUpdate sends a KeyUpdate as a client would, and moves to its next
// sending key.
func (c *Conn) sendKeyUpdate(request bool) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	r := byte(0)
	if request {
		r = 1
	}
	if err := c.writeRecord(typeHandshake, []byte{handshakeKeyUpdate, 0, 0, 1, r}); err != nil {
		return err
	}
	c.out.update(c.suite)
	return nil
}

func TestKeyUpdatesInEachSuiteMoveBothSidesToNewKeys(t *testing.T) {
	for _, s := range suites {
		t.Run(tls.CipherSuiteName(s.id), func(t *testing.T) {
			server, client := mirrored(t, s.id)
			exchange := func(what string) {
				t.Helper()
				up, down := []byte("up:"+what), []byte("down:"+what)
				go client.Write(up)
				got := make([]byte, len(up))
				if _, err := io.ReadFull(server, got); err != nil || !bytes.Equal(got, up) {
					t.Fatalf("%s, client to server: %q, %v", what, got, err)
				}
				go server.Write(down)
				got = make([]byte, len(down))
				if _, err := io.ReadFull(client, got); err != nil || !bytes.Equal(got, down) {
					t.Fatalf("%s, server to client: %q, %v", what, got, err)
				}
			}
			exchange("before")
			before := server.out.key
			if err := client.sendKeyUpdate(false); err != nil {
				t.Fatal(err)
			}
			exchange("after an update not requested")
			if server.out.key != before {
				t.Fatal("the server changed its sending key unasked")
			}
			if err := client.sendKeyUpdate(true); err != nil {
				t.Fatal(err)
			}
			exchange("after an update requested")
			if server.out.key == before || server.out.seq == 0 {
				t.Fatal("the server did not move to a new sending key when asked")
			}
		})
	}
}

func TestAParkedConnectionDropsItsCiphersAndCarriesOnWhenResumed(t *testing.T) {
	server, client := mirrored(t, tls.TLS_AES_128_GCM_SHA256)
	go client.Write([]byte("one"))
	buf := make([]byte, 3)
	if _, err := io.ReadFull(server, buf); err != nil {
		t.Fatal(err)
	}
	raw := server.raw
	server.Park()
	if server.in.aead != nil || server.out.aead != nil || server.raw != nil || server.rbuf != nil {
		t.Fatal("a parked connection kept its ciphers, socket or buffer")
	}
	if _, err := server.Read(buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("a parked connection read: %v", err)
	}
	server.Resume(raw)
	go client.Write([]byte("two"))
	if _, err := io.ReadFull(server, buf); err != nil || string(buf) != "two" {
		t.Fatalf("after resuming: %q, %v", buf, err)
	}
}

func TestRelayingAMessageAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("under the race detector sync.Pool drops some of what it is given")
	}
	server, client := mirrored(t, tls.TLS_AES_128_GCM_SHA256)
	msg, got := pattern(200, 6), make([]byte, 200)
	roundTrip := func() {
		if _, err := client.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(server, got); err != nil {
			t.Fatal(err)
		}
		if _, err := server.Write(got); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(client, got); err != nil {
			t.Fatal(err)
		}
	}
	roundTrip() // the ciphers are made on first use
	if n := testing.AllocsPerRun(200, roundTrip); n > 0.05 {
		t.Fatalf("%.2f allocations per message both ways; want none", n)
	}
}

// writePadded sends data as a client would, with pad zero bytes of TLS 1.3
// padding after the content type.
func (c *Conn) writePadded(data []byte, pad int) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	inner := append(append(append([]byte{}, data...), typeAppData), make([]byte, pad)...)
	aead, err := c.out.cipher(c.suite)
	if err != nil {
		return err
	}
	b := []byte{typeAppData, 3, 3, 0, 0}
	binary.BigEndian.PutUint16(b[3:], uint16(len(inner)+tagLen))
	b = aead.Seal(b, c.out.nonce(), inner, b[:recordHeader])
	c.out.seq++
	_, err = c.raw.Write(b)
	return err
}

func TestPaddingIsStrippedAndAnOversizedInnerPlaintextIsRefused(t *testing.T) {
	server, client := mirrored(t, tls.TLS_AES_256_GCM_SHA384)
	if err := client.writePadded([]byte("padded"), 100); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 6)
	if _, err := io.ReadFull(server, got); err != nil || string(got) != "padded" {
		t.Fatalf("a padded record read as %q, %v", got, err)
	}
	// 2^14 bytes of data plus its content type is the most a record may
	// hold, padding included (RFC 8446 5.4).
	if err := client.writePadded(make([]byte, maxPlaintext), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(server, make([]byte, maxPlaintext)); err == nil || !strings.Contains(err.Error(), "oversized") {
		t.Fatalf("an inner plaintext one byte too long read as %v", err)
	}
}

// failingConn fails every write after the first n.
type failingConn struct {
	net.Conn
	n int
}

func (c *failingConn) Write(p []byte) (int, error) {
	if c.n == 0 {
		return len(p) / 2, errors.New("broken pipe")
	}
	c.n--
	return c.Conn.Write(p)
}

func TestAFailedWriteIsFinalSoNoNonceIsUsedTwice(t *testing.T) {
	server, _ := mirrored(t, tls.TLS_AES_128_GCM_SHA256)
	server.raw = &failingConn{Conn: server.raw, n: 1}
	if _, err := server.Write([]byte("one")); err != nil {
		t.Fatal(err)
	}
	if _, err := server.Write([]byte("two")); err == nil {
		t.Fatal("a write that failed reported success")
	}
	seq := server.out.seq
	if _, err := server.Write([]byte("three")); err == nil {
		t.Fatal("a write after a failed one was attempted")
	}
	if server.out.seq != seq || seq != 2 {
		t.Fatalf("sequence number %d after a failed write and a refused one; want 2: the failed record's nonce is spent, nothing sealed since", server.out.seq)
	}
}

func TestAWipedConnectionHoldsNoKeysAndRefusesToWrite(t *testing.T) {
	server, _ := mirrored(t, tls.TLS_AES_128_GCM_SHA256)
	server.Wipe()
	if server.in != (half{}) || server.out != (half{}) {
		t.Fatal("keys survived Wipe")
	}
	if _, err := server.Write([]byte("x")); err == nil {
		t.Fatal("a wiped connection wrote")
	}
}

func TestARunOfRecordsWithoutDataIsBounded(t *testing.T) {
	server, client := mirrored(t, tls.TLS_AES_128_GCM_SHA256)
	go func() {
		for i := 0; i <= maxEmptyRecords; i++ {
			if i%2 == 0 {
				client.sendKeyUpdate(false)
			} else {
				client.wmu.Lock()
				client.writeRecord(typeAppData, nil)
				client.wmu.Unlock()
			}
		}
	}()
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := server.Read(make([]byte, 10)); err == nil || !strings.Contains(err.Error(), "without data") {
		t.Fatalf("%d records without data read as %v", maxEmptyRecords+1, err)
	}
}

func TestAClientsFatalAlertStopsWrites(t *testing.T) {
	server, client := mirrored(t, tls.TLS_AES_128_GCM_SHA256)
	go func() {
		client.wmu.Lock()
		client.writeRecord(typeAlert, []byte{2, alertBadRecordMAC})
		client.wmu.Unlock()
	}()
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := server.Read(make([]byte, 10)); err == nil {
		t.Fatal("a fatal alert read as data")
	}
	if _, err := server.Write([]byte("x")); err == nil {
		t.Fatal("the connection wrote after the client's fatal alert")
	}
}

func TestOnlyClientsOfferingTLS13GetAConfigOfTheirOwn(t *testing.T) {
	cfg := ServerConfig(serverConfig(t))
	tap := NewTap(nil)
	own, err := cfg.GetConfigForClient(&tls.ClientHelloInfo{Conn: tap, SupportedVersions: []uint16{tls.VersionTLS12}})
	if err != nil || own != nil {
		t.Fatalf("a TLS 1.2 client got %v, %v; want the shared config", own, err)
	}
	own, err = cfg.GetConfigForClient(&tls.ClientHelloInfo{Conn: tap, SupportedVersions: []uint16{tls.VersionTLS13, tls.VersionTLS12}})
	if err != nil || own == nil || own.KeyLogWriter != &tap.keys {
		t.Fatalf("a TLS 1.3 client got %v, %v; want a config logging keys to its tap", own, err)
	}
}

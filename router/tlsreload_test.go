package router_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/router"
)

// serverCert does an SSLRequest and a TLS handshake with pgferry and
// returns the certificate it presented.
func serverCert(t *testing.T, f *ferrytest.Ferry) []byte {
	t.Helper()
	c := dialFerry(t, f)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	sendRaw(t, c, startupPacket(sslRequestCode, nil))
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil || b[0] != 'S' {
		t.Fatalf("SSLRequest answered %q, %v", b[0], err)
	}
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	return tc.ConnectionState().PeerCertificates[0].Raw
}

// writeLocalhostCert writes a fresh self-signed server certificate and key
// for localhost and returns their paths.
func writeLocalhostCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	return writeSelfSigned(t, &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
}

func TestReloadSwapsTheClientTLSCertificateForNewConnections(t *testing.T) {
	t.Parallel()
	cfg := ferrytest.Config(t, cluster)
	offerClientTLS(cfg, "prefer")
	f := ferrytest.Start(t, cfg)
	before := serverCert(t, f)

	next := *cfg
	next.ClientTLSCertFile, next.ClientTLSKeyFile = writeLocalhostCert(t)
	if err := f.Server.Reload(&next); err != nil {
		t.Fatal(err)
	}
	after := serverCert(t, f)
	if bytes.Equal(before, after) {
		t.Fatal("new TLS connections still get the old certificate after reload")
	}
	// A reload with a missing key file is rejected and the current
	// certificate stays in force.
	broken := next
	broken.ClientTLSKeyFile = filepath.Join(t.TempDir(), "missing.pem")
	if err := f.Server.Reload(&broken); err == nil {
		t.Fatal("a reload with a missing key file was accepted")
	}
	if got := serverCert(t, f); !bytes.Equal(got, after) {
		t.Fatal("a rejected reload changed the certificate")
	}
}

// A login binds SCRAM-SHA-256-PLUS to the certificate its own handshake
// presented: a reload that replaces the certificate between the
// handshake and the SCRAM exchange does not fail the login.
func TestALoginDuringACertificateReloadBindsSCRAMToTheCertificateItsHandshakeSaw(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg := ferrytest.Config(t, cluster)
	offerClientTLS(cfg, "prefer")
	f := ferrytest.Start(t, cfg)
	next := *cfg
	next.ClientTLSCertFile, next.ClientTLSKeyFile = writeLocalhostCert(t)
	// The first handshake done (the only one until the login ends)
	// reloads the configuration with the new certificate.
	var reloads atomic.Int32
	reloaded := make(chan error, 1)
	defer router.SetFaultFor(f.Server, func(_, where string) {
		if where == "tls" && reloads.Add(1) == 1 {
			reloaded <- f.Server.Reload(&next)
		}
	})()
	conn := ferrytest.Connect(t, ctx, f.AppDSN()+" sslmode=require channel_binding=require")
	if err := <-reloaded; err != nil {
		t.Fatal(err)
	}
	var one int
	if err := conn.QueryRow(ctx, "select 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("select 1 = %d, %v", one, err)
	}
	tc, ok := conn.PgConn().Conn().(*tls.Conn)
	if !ok {
		t.Fatalf("pgx's connection is a %T, not TLS", conn.PgConn().Conn())
	}
	if bytes.Equal(tc.ConnectionState().PeerCertificates[0].Raw, serverCert(t, f)) {
		t.Fatal("the reload during the login did not replace the certificate")
	}
}

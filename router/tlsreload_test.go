package router_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// serverCert does an SSLRequest and a TLS handshake with pgferry and
// returns the certificate it presented.
func serverCert(t *testing.T, addr string) []byte {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	req := binary.BigEndian.AppendUint32(nil, 8)
	req = binary.BigEndian.AppendUint32(req, 80877103)
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
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

// writeSelfSigned writes a fresh self-signed certificate and key for
// localhost and returns their paths.
func writeSelfSigned(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

func TestReloadSwapsTheClientTLSCertificateForNewConnections(t *testing.T) {
	t.Parallel()
	cfg := ferrytest.Config(t, cluster)
	cfg.ClientTLSSSLMode = "prefer"
	cfg.ClientTLSCertFile, cfg.ClientTLSKeyFile = cluster.CertFile, cluster.KeyFile
	f := ferrytest.Start(t, cfg)
	before := serverCert(t, f.Addr.String())

	next := *cfg
	next.ClientTLSCertFile, next.ClientTLSKeyFile = writeSelfSigned(t)
	if err := f.Server.Reload(&next); err != nil {
		t.Fatal(err)
	}
	after := serverCert(t, f.Addr.String())
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
	if got := serverCert(t, f.Addr.String()); !bytes.Equal(got, after) {
		t.Fatal("a rejected reload changed the certificate")
	}
}

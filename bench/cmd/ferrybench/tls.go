package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// tlsLabel describes the TLS the idle-tls scenario measures, as the report
// names it. clientTLS pins the version and serverCert the key type, so the
// label cannot silently become untrue.
const tlsLabel = "TLSv1.3, ECDSA P-256"

// sslRequestCode is the protocol code of SSLRequest (PostgreSQL's
// NEGOTIATE_SSL_CODE, 1234 << 16 | 5679).
const sslRequestCode = 80877103

// serverTLS is the throwaway certificate every pooler presents to TLS
// clients.
type serverTLS struct {
	certFile, keyFile string
}

// writeServerCert generates a self-signed ECDSA P-256 certificate for
// 127.0.0.1 and localhost and writes it and its key as PEM into dir. ECDSA
// P-256 because both OpenSSL (PgBouncer) and crypto/tls (pgferry) serve it
// and its handshake is cheap, so the run measures memory, not RSA signing.
// The key file is 0600: PgBouncer's owner is set by the caller.
func writeServerCert(dir string) (serverTLS, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return serverTLS{}, fmt.Errorf("generate TLS key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return serverTLS{}, fmt.Errorf("certificate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "127.0.0.1", Organization: []string{"ferrybench (throwaway)"}},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
		// Back-dated against clock skew; a week outlasts any run.
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return serverTLS{}, fmt.Errorf("create TLS certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return serverTLS{}, fmt.Errorf("marshal TLS key: %w", err)
	}
	s := serverTLS{certFile: filepath.Join(dir, "server.crt"), keyFile: filepath.Join(dir, "server.key")}
	if err := os.WriteFile(s.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return serverTLS{}, fmt.Errorf("write TLS certificate: %w", err)
	}
	if err := os.WriteFile(s.keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return serverTLS{}, fmt.Errorf("write TLS key: %w", err)
	}
	return s, nil
}

// clientTLS is the client side of idle-tls. The throwaway certificate is
// not verified (there is no CA to verify it against, and verification is
// client CPU, not pooler memory). TLS 1.3 is required, not merely
// preferred, so that a pooler falling back to 1.2 fails loudly instead of
// being measured under the wrong label.
func clientTLS() *tls.Config {
	return &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
}

// startTLS sends SSLRequest on conn, expects 'S' and runs the TLS client
// handshake; the startup packet and the login then go over the returned
// connection. The single response byte is read straight from conn, with no
// buffering, so nothing the server sent in the clear can end up read as if
// it came over TLS.
func startTLS(ctx context.Context, conn net.Conn, cfg *tls.Config) (*tls.Conn, error) {
	var req [8]byte
	binary.BigEndian.PutUint32(req[0:4], 8)
	binary.BigEndian.PutUint32(req[4:8], sslRequestCode)
	if _, err := conn.Write(req[:]); err != nil {
		return nil, fmt.Errorf("send SSLRequest: %w", err)
	}
	var resp [1]byte
	if _, err := io.ReadFull(conn, resp[:]); err != nil {
		return nil, fmt.Errorf("read SSLRequest response: %w", err)
	}
	switch resp[0] {
	case 'S':
	case 'N':
		return nil, errors.New("server refused TLS (SSLRequest answered 'N')")
	default:
		return nil, fmt.Errorf("unexpected SSLRequest response %q", resp[0])
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	return tc, nil
}

// tlsSummary names the version, cipher suite and key exchange group a TLS
// connection negotiated, for the report (Go's client offers
// X25519MLKEM768 first, which PgBouncer's OpenSSL 3.0 does not have);
// empty for a plain connection.
func tlsSummary(c net.Conn) string {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return ""
	}
	st := tc.ConnectionState()
	return tls.VersionName(st.Version) + ", " + tls.CipherSuiteName(st.CipherSuite) + ", " + st.CurveID.String()
}

// The TLS of pgferry's connections to servers: the configuration a pool
// dials with, and what a reload compares to see whether its files changed.

package router

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/pgferry/pgferry/configs"
)

// tlsDigest is a digest of the contents of the files a pool's server TLS
// was made from (see serverTLS); the zero value stands for no TLS.
type tlsDigest [sha256.Size]byte

// serverTLS returns the TLS configuration of database db's server
// connections (nil for sslmode disable): the versions server_tls_protocols
// allows, the TLS 1.2 suites server_tls_ciphers allows, db's sslrootcert
// (server_tls_ca_file by default) and the global server_tls_cert_file and
// server_tls_key_file, read now. With it comes the
// digest of what was read, which the pool keeps: a reload that finds other
// contents under the same names rebuilds the pool (see serverTLSDigests),
// as PgBouncer's reload re-reads its TLS files and recycles the server
// connections (sbuf.c, sbuf_tls_setup); a certificate manager replaces
// them so.
func serverTLS(cfg *configs.Config, dbName string, db configs.Database) (*tls.Config, tlsDigest, error) {
	if db.SSLMode == "disable" {
		return nil, tlsDigest{}, nil
	}
	minV, maxV, err := configs.TLSVersions(cfg.ServerTLSProtocols)
	if err != nil {
		return nil, tlsDigest{}, fmt.Errorf("server_tls_protocols: %w", err)
	}
	suites, err := configs.TLSCipherSuites(cfg.ServerTLSCiphers)
	if err != nil {
		return nil, tlsDigest{}, fmt.Errorf("server_tls_ciphers: %w", err)
	}
	tc, digest, err := serverTLSFiles(cfg, dbName, db.SSLRootCert)
	if err != nil {
		return nil, tlsDigest{}, err
	}
	tc.MinVersion, tc.MaxVersion, tc.CipherSuites = minV, maxV, suites
	return tc, digest, nil
}

// serverTLSFiles reads and parses database dbName's sslrootcert root (if
// set) and cfg's server_tls_cert_file and key (if set) into a TLS
// configuration, and returns the digest of the three contents. An error
// names the key whose file could not be read or parsed.
func serverTLSFiles(cfg *configs.Config, dbName, root string) (*tls.Config, tlsDigest, error) {
	tc := &tls.Config{}
	var contents [3][]byte // root, cert, key
	var err error
	if root != "" {
		if contents[0], err = os.ReadFile(root); err != nil {
			return nil, tlsDigest{}, fmt.Errorf("databases.%s.sslrootcert: %w", dbName, err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(contents[0]) {
			return nil, tlsDigest{}, fmt.Errorf("databases.%s.sslrootcert: no certificates in %s", dbName, root)
		}
	}
	if cfg.ServerTLSCertFile != "" {
		if contents[1], err = os.ReadFile(cfg.ServerTLSCertFile); err != nil {
			return nil, tlsDigest{}, fmt.Errorf("server_tls_cert_file: %w", err)
		}
		if contents[2], err = os.ReadFile(cfg.ServerTLSKeyFile); err != nil {
			return nil, tlsDigest{}, fmt.Errorf("server_tls_key_file: %w", err)
		}
		cert, err := tls.X509KeyPair(contents[1], contents[2])
		if err != nil {
			return nil, tlsDigest{}, fmt.Errorf("server_tls_cert_file and server_tls_key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	// Each content length-prefixed: the digest tells the files apart,
	// not only their concatenation.
	h := sha256.New()
	for _, b := range contents {
		h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(b))))
		h.Write(b)
	}
	return tc, tlsDigest(h.Sum(nil)), nil
}

// serverTLSDigests reads the server TLS files of cfg's databases as
// serverTLS would, and returns their digests by sslrootcert. A path whose
// files cannot be read or parsed (a certificate manager's write caught
// half done) is left out, and the error says why: apply refuses such a
// configuration, and Reload, which calls it again before it takes the lock
// under which it looks at the pools, leaves the pools that use them with
// the files they read, as PgBouncer keeps its TLS configuration when a
// reload cannot load the new one.
func serverTLSDigests(cfg *configs.Config) (map[string]tlsDigest, error) {
	out := make(map[string]tlsDigest)
	tried := make(map[string]bool)
	var errs []error
	for name, db := range cfg.Databases {
		if db.SSLMode == "disable" || tried[db.SSLRootCert] {
			continue
		}
		tried[db.SSLRootCert] = true
		if _, d, err := serverTLSFiles(cfg, name, db.SSLRootCert); err != nil {
			errs = append(errs, err)
		} else {
			out[db.SSLRootCert] = d
		}
	}
	return out, errors.Join(errs...)
}

// serverTLSChanged reports whether the server TLS files of a pool made for
// db, whose digest was d, have other contents now, which parse (digests
// from serverTLSDigests).
func serverTLSChanged(db configs.Database, d tlsDigest, now map[string]tlsDigest) bool {
	if db.SSLMode == "disable" {
		return false
	}
	cur, ok := now[db.SSLRootCert]
	return ok && cur != d
}

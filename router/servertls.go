// The TLS of pgferry's connections to servers: the configuration a pool
// dials with, and what a reload compares to see whether its files changed.

package router

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"os"

	"github.com/pgferry/pgferry/configs"
)

// tlsDigest is a digest of the contents of the files a pool's server TLS
// was made from (see serverTLS); the zero value stands for no TLS.
type tlsDigest [sha256.Size]byte

// serverTLS returns the TLS configuration of database db's server
// connections (nil for sslmode disable): the versions server_tls_protocols
// allows, db's sslrootcert (server_tls_ca_file by default) and the global
// server_tls_cert_file and server_tls_key_file, read now. With it comes the digest of what was read, which the pool keeps:
// a reload that finds other contents under the same names rebuilds the pool
// (see serverTLSDigests), as PgBouncer's reload re-reads its TLS files and
// recycles the server connections (sbuf.c, sbuf_tls_setup); a certificate
// manager replaces them so.
func serverTLS(cfg *configs.Config, dbName string, db configs.Database) (*tls.Config, tlsDigest, error) {
	if db.SSLMode == "disable" {
		return nil, tlsDigest{}, nil
	}
	files, err := readServerTLSFiles(cfg, dbName, db.SSLRootCert)
	if err != nil {
		return nil, tlsDigest{}, err
	}
	minV, maxV, err := configs.TLSVersions(cfg.ServerTLSProtocols)
	if err != nil {
		return nil, tlsDigest{}, fmt.Errorf("server_tls_protocols: %w", err)
	}
	tc := &tls.Config{MinVersion: minV, MaxVersion: maxV}
	if db.SSLRootCert != "" {
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(files.root) {
			return nil, tlsDigest{}, fmt.Errorf("databases.%s.sslrootcert: no certificates in %s", dbName, db.SSLRootCert)
		}
		tc.RootCAs = roots
	}
	if cfg.ServerTLSCertFile != "" {
		cert, err := tls.X509KeyPair(files.cert, files.key)
		if err != nil {
			return nil, tlsDigest{}, fmt.Errorf("server_tls_cert_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, files.digest(), nil
}

// serverTLSFiles are the contents of the files of a pool's server TLS.
type serverTLSFiles struct{ root, cert, key []byte }

// readServerTLSFiles reads database dbName's sslrootcert root (if set) and
// cfg's server_tls_cert_file and key (if set). An error names the key whose
// file could not be read.
func readServerTLSFiles(cfg *configs.Config, dbName, root string) (serverTLSFiles, error) {
	var f serverTLSFiles
	var err error
	if root != "" {
		if f.root, err = os.ReadFile(root); err != nil {
			return f, fmt.Errorf("databases.%s.sslrootcert: %w", dbName, err)
		}
	}
	if cfg.ServerTLSCertFile != "" {
		if f.cert, err = os.ReadFile(cfg.ServerTLSCertFile); err != nil {
			return f, fmt.Errorf("server_tls_cert_file: %w", err)
		}
		if f.key, err = os.ReadFile(cfg.ServerTLSKeyFile); err != nil {
			return f, fmt.Errorf("server_tls_key_file: %w", err)
		}
	}
	return f, nil
}

// digest returns the digest of the three contents, each length-prefixed:
// it tells the files apart, not only their concatenation.
func (f serverTLSFiles) digest() tlsDigest {
	h := sha256.New()
	for _, b := range [][]byte{f.root, f.cert, f.key} {
		h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(b))))
		h.Write(b)
	}
	return tlsDigest(h.Sum(nil))
}

// serverTLSDigests reads the server TLS files of cfg's databases as
// serverTLS would, and returns their digests by sslrootcert; a path whose
// files cannot be read is left out, and a pool that has none here is
// rebuilt (its new pool reports the error to its clients). Reload calls it
// before it takes the lock under which it looks at the pools.
func serverTLSDigests(cfg *configs.Config) map[string]tlsDigest {
	out := make(map[string]tlsDigest)
	for _, root := range append([]string{"", cfg.ServerTLSCAFile}, rootCerts(cfg)...) {
		if _, done := out[root]; done {
			continue
		}
		if f, err := readServerTLSFiles(cfg, "", root); err == nil {
			out[root] = f.digest()
		}
	}
	return out
}

// rootCerts lists the sslrootcert of every database entry of cfg.
func rootCerts(cfg *configs.Config) []string {
	out := make([]string, 0, len(cfg.Databases))
	for _, db := range cfg.Databases {
		out = append(out, db.SSLRootCert)
	}
	return out
}

// serverTLSChanged reports whether the server TLS files of a pool made for
// db, whose digest was d, have other contents now (digests from
// serverTLSDigests).
func serverTLSChanged(db configs.Database, d tlsDigest, now map[string]tlsDigest) bool {
	if db.SSLMode == "disable" {
		return false
	}
	cur, ok := now[db.SSLRootCert]
	return !ok || cur != d
}

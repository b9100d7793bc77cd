package tls13

import (
	"crypto/fips140"
	"crypto/tls"
	"encoding/binary"
	"net"
	"slices"
)

// recordHeader is the length of a TLS record header: type, legacy
// version, length.
const recordHeader = 5

// Tap sits between crypto/tls and a client's socket for the handshake (see
// the package comment). Make one with NewTap, run tls.Server over it with
// a configuration from ServerConfig, and after Handshake call Takeover.
type Tap struct {
	net.Conn
	keys keyLog
	hdr  [recordHeader]byte
	hn   int  // header bytes of the record being read
	left int  // body bytes of the record being read still to come
	done bool // Takeover was called: reads pass through
}

// NewTap wraps a client socket for its TLS handshake.
func NewTap(c net.Conn) *Tap { return &Tap{Conn: c} }

// ServerConfig returns a copy of base for servers whose connections run
// over Taps: for a client that offers TLS 1.3 it sends the key log to the
// tap, in a copy made for that handshake (dropped with crypto/tls's
// connection after Takeover); any other client keeps the shared copy.
// base must have SessionTicketsDisabled set, or Takeover declines. It
// replaces base's GetConfigForClient, which pgferry does not set.
func ServerConfig(base *tls.Config) *tls.Config {
	c := base.Clone()
	c.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		t, ok := hello.Conn.(*Tap)
		if !ok || !available(base) || !slices.Contains(hello.SupportedVersions, tls.VersionTLS13) {
			return nil, nil
		}
		own := base.Clone()
		own.KeyLogWriter = &t.keys
		return own, nil
	}
	return c
}

// available reports whether connections of servers configured with cfg can
// be taken over. Not in FIPS 140 mode: the AEADs here take nonces of
// their own making, which the FIPS module does not count as approved (and
// under fips140=only refuses); crypto/tls, whose TLS 1.3 AEAD the module
// checks, carries those connections. Not with session tickets: see the
// package comment.
func available(cfg *tls.Config) bool {
	return Usable() && cfg.SessionTicketsDisabled
}

// Usable reports whether this process takes TLS 1.3 connections over at
// all: not built with pgferry_notls13, not in FIPS 140 mode (see
// available).
func Usable() bool { return Enabled && !fips140.Enabled() }

// Wipe overwrites the secrets of a tap whose handshake failed.
func (t *Tap) Wipe() { t.keys.wipe() }

// Read reads no further than the end of the current record until
// Takeover, so that crypto/tls never holds bytes past the handshake.
func (t *Tap) Read(p []byte) (int, error) {
	if t.done {
		return t.Conn.Read(p)
	}
	want := t.left
	if want == 0 {
		want = recordHeader - t.hn
	}
	if len(p) > want {
		p = p[:want]
	}
	n, err := t.Conn.Read(p)
	if t.left > 0 {
		t.left -= n
	} else {
		t.hn += copy(t.hdr[t.hn:], p[:n])
		if t.hn == recordHeader {
			t.hn, t.left = 0, int(binary.BigEndian.Uint16(t.hdr[3:]))
		}
	}
	return n, err
}

// Takeover returns a Conn that carries on tc, whose handshake over t has
// just completed, or nil when crypto/tls must keep it: a TLS version other
// than 1.3, a cipher suite this package does not know, session tickets
// enabled (crypto/tls would have written them under the application key),
// secrets the key log did not catch, or crypto/tls holding part of a
// record. Given a Conn, the caller must drop tc without closing it (Close
// would send close_notify under keys the Conn now owns). Either way the
// tap passes reads through from now on, and its copy of the secrets is
// wiped.
func (t *Tap) Takeover(tc *tls.Conn, cfg *tls.Config) *Conn {
	defer t.keys.wipe()
	t.done = true
	if cfg == nil || !available(cfg) || t.hn != 0 || t.left != 0 {
		return nil
	}
	st := tc.ConnectionState()
	s := suiteByID(st.CipherSuite)
	if !st.HandshakeComplete || st.Version != tls.VersionTLS13 || s == nil {
		return nil
	}
	n := s.hash().Size()
	if int(t.keys.clen) != n || int(t.keys.slen) != n {
		return nil
	}
	c := &Conn{raw: t.Conn, suite: s}
	c.in.set(s, t.keys.client[:n])
	c.out.set(s, t.keys.server[:n])
	return c
}

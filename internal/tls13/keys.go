package tls13

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"hash"

	"golang.org/x/crypto/chacha20poly1305"
)

// suite is what a TLS 1.3 cipher suite means to the record layer.
type suite struct {
	id     uint16
	hash   func() hash.Hash
	keyLen int
	aead   func(key []byte) (cipher.AEAD, error)
}

func aesGCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

var suites = [...]suite{
	{tls.TLS_AES_128_GCM_SHA256, sha256.New, 16, aesGCM},
	{tls.TLS_AES_256_GCM_SHA384, sha512.New384, 32, aesGCM},
	{tls.TLS_CHACHA20_POLY1305_SHA256, sha256.New, 32, chacha20poly1305.New},
}

func suiteByID(id uint16) *suite {
	for i := range suites {
		if suites[i].id == id {
			return &suites[i]
		}
	}
	return nil
}

// expandLabel is RFC 8446's HKDF-Expand-Label with an empty context.
func expandLabel(h func() hash.Hash, secret []byte, label string, length int) []byte {
	var info [2 + 1 + 6 + 16 + 1]byte // labels here are short
	b := binary.BigEndian.AppendUint16(info[:0], uint16(length))
	b = append(b, byte(len("tls13 ")+len(label)))
	b = append(b, "tls13 "...)
	b = append(b, label...)
	b = append(b, 0)
	out, err := hkdf.Expand(h, secret, string(b), length)
	if err != nil {
		panic("tls13: " + err.Error()) // only for lengths far beyond these
	}
	return out
}

// maxSecret is the longest traffic secret (SHA-384's output).
const maxSecret = 48

// half is one direction's keys: its traffic secret, the key and IV derived
// from it, the next record's sequence number, and the AEAD, made on first
// use and dropped by Park.
type half struct {
	secret [maxSecret]byte
	key    [32]byte
	iv     [12]byte
	nb     [12]byte // the nonce being used
	seq    uint64
	aead   cipher.AEAD
}

// set installs a traffic secret (RFC 8446 7.3) and restarts the sequence.
func (h *half) set(s *suite, secret []byte) {
	n := s.hash().Size()
	copy(h.secret[:], secret[:n])
	copy(h.key[:], expandLabel(s.hash, secret[:n], "key", s.keyLen))
	copy(h.iv[:], expandLabel(s.hash, secret[:n], "iv", 12))
	h.seq, h.aead = 0, nil
}

// update moves to the next traffic secret, after a KeyUpdate (RFC 8446 7.2).
// The old secret and keys are overwritten in the half; the derivation's
// own copies are left to the garbage collector (see Conn.Wipe).
func (h *half) update(s *suite) {
	n := s.hash().Size()
	h.set(s, expandLabel(s.hash, h.secret[:n], "traffic upd", n))
}

// cipher returns the direction's AEAD, making it if Park dropped it.
func (h *half) cipher(s *suite) (cipher.AEAD, error) {
	if h.aead == nil {
		a, err := s.aead(h.key[:s.keyLen])
		if err != nil {
			return nil, err
		}
		h.aead = a
	}
	return h.aead, nil
}

// nonce is the next record's nonce: the IV with the sequence number XORed
// into its last eight bytes (RFC 8446 5.3). It is built in the half itself:
// a local array would escape to the heap through the AEAD interface.
func (h *half) nonce() []byte {
	h.nb = h.iv
	for i := 0; i < 8; i++ {
		h.nb[4+i] ^= byte(h.seq >> (56 - 8*i))
	}
	return h.nb[:]
}

// wipe overwrites the direction's secrets.
func (h *half) wipe() { *h = half{} }

// keyLog receives crypto/tls's key log lines for one connection and keeps
// the two application traffic secrets; it drops every other line.
type keyLog struct {
	client, server [maxSecret]byte
	clen, slen     uint8
}

// Write takes one key log line: "LABEL <client random> <secret>" in hex.
func (k *keyLog) Write(line []byte) (int, error) {
	f := bytes.Fields(line)
	if len(f) != 3 || hex.DecodedLen(len(f[2])) > maxSecret {
		return len(line), nil
	}
	var dst *[maxSecret]byte
	var n *uint8
	switch string(f[0]) {
	case "CLIENT_TRAFFIC_SECRET_0":
		dst, n = &k.client, &k.clen
	case "SERVER_TRAFFIC_SECRET_0":
		dst, n = &k.server, &k.slen
	default:
		return len(line), nil
	}
	m, err := hex.Decode(dst[:], f[2])
	if err != nil {
		return len(line), nil
	}
	*n = uint8(m)
	return len(line), nil
}

func (k *keyLog) wipe() { *k = keyLog{} }

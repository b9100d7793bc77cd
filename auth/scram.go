package auth

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"

	"golang.org/x/text/secure/precis"
)

const (
	// MechanismSCRAMSHA256 is the SASL mechanism name of SCRAM-SHA-256.
	MechanismSCRAMSHA256 = "SCRAM-SHA-256"
	// MechanismSCRAMSHA256Plus is the SASL mechanism name of SCRAM-SHA-256
	// with tls-server-end-point channel binding.
	MechanismSCRAMSHA256Plus = "SCRAM-SHA-256-PLUS"

	// scramDefaultIterations and scramDefaultSaltLen match PostgreSQL's
	// defaults (scram_iterations = 4096, SCRAM_DEFAULT_SALT_LEN = 16 in
	// src/include/common/scram-common.h).
	scramDefaultIterations = 4096
	scramDefaultSaltLen    = 16
	// scramRawNonceLen is SCRAM_RAW_NONCE_LEN in scram-common.h.
	scramRawNonceLen = 18
	// scramKeyLen is SCRAM_MAX_KEY_LEN for SHA-256.
	scramKeyLen = sha256.Size
	// scramMaxIterations bounds the PBKDF2 work an iteration count read from a
	// verifier or a server-first-message can demand (pgx uses the same
	// ceiling, about 2500 times PostgreSQL's default).
	scramMaxIterations = 10_000_000

	// gs2NoBinding is the gs2 header of a client that does not support
	// channel binding (RFC 5802 section 7).
	gs2NoBinding = "n,,"
	// cbTypeServerEndPnt is the only channel binding type PostgreSQL
	// supports (RFC 5929 section 4).
	cbTypeServerEndPnt = "tls-server-end-point"
)

// ErrPasswordMismatch is returned (wrapped) when a client's password, MD5
// response or SCRAM proof does not match. It is returned in exactly the same
// way for users that do not exist, so that callers cannot tell the two apart.
var ErrPasswordMismatch = errors.New("password authentication failed")

// errExchangeState reports a method called out of order on a SCRAMServer or
// SCRAMClient; it indicates a bug in the caller, not a misbehaving peer.
var errExchangeState = errors.New("SCRAM exchange method called out of order")

// ProtocolError reports a malformed or inconsistent SCRAM message from the
// client: bad syntax or base64, missing attributes, a nonce or channel
// binding mismatch, an unsupported mechanism or extension. Msg is safe to
// send to the client in an ErrorResponse (SQLSTATE 08P01
// protocol_violation): it never quotes the client's input or any secret.
type ProtocolError struct {
	Msg string
}

// Error returns Msg.
func (e *ProtocolError) Error() string { return e.Msg }

func protoErr(format string, args ...any) *ProtocolError {
	return &ProtocolError{Msg: fmt.Sprintf(format, args...)}
}

// scramSecret is a parsed SCRAM-SHA-256 verifier, as stored by PostgreSQL in
// pg_authid.rolpassword: SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>
// (src/common/scram-common.c scram_build_secret, auth-scram.c
// parse_scram_secret).
type scramSecret struct {
	iterations int
	salt       []byte
	storedKey  [scramKeyLen]byte
	serverKey  [scramKeyLen]byte
	// macs are the MACs keyed by storedKey and serverKey that every login
	// computes, made once per verifier (see withMACs; unknown users' mock
	// verifiers share mockMACs).
	macs *scramMACs
}

// scramMACs are HMAC-SHA-256 keyed by a verifier's StoredKey and by its
// ServerKey, with the keys' pads already hashed. A login checks the
// client's proof with one and signs with the other: made once per verifier,
// each costs only its message's blocks and one more, not the two pad
// blocks and the allocations of hmac.New besides.
type scramMACs struct{ stored, server keyedMAC }

// withMACs returns sec with its MACs made.
func (sec scramSecret) withMACs() scramSecret {
	sec.macs = &scramMACs{stored: newKeyedMAC(sec.storedKey[:]), server: newKeyedMAC(sec.serverKey[:])}
	return sec
}

// keyedMAC is HMAC-SHA-256 (RFC 2104: H(K^opad, H(K^ipad, m))) for one key
// of at most a block: the SHA-256 states after the inner and the outer pad,
// marshaled.
type keyedMAC struct{ inner, outer []byte }

func newKeyedMAC(key []byte) keyedMAC {
	if len(key) > sha256.BlockSize {
		panic("auth: keyedMAC keys are SCRAM keys of 32 bytes, at most a block")
	}
	var pad [sha256.BlockSize]byte
	copy(pad[:], key)
	state := func(x byte) []byte {
		var p [sha256.BlockSize]byte
		for i := range p {
			p[i] = pad[i] ^ x
		}
		h := sha256.New()
		h.Write(p[:])
		b, err := h.(encoding.BinaryMarshaler).MarshalBinary()
		if err != nil {
			panic("crypto/sha256 cannot marshal its state: " + err.Error())
		}
		return b
	}
	return keyedMAC{inner: state(0x36), outer: state(0x5c)}
}

// sum writes the MAC of msg to out, hashing with h (a SHA-256 state the
// caller reuses across MACs: hash.Hash's methods take their arguments
// through an interface, so a fresh state and its outputs would each cost
// an allocation).
func (k *keyedMAC) sum(h hash.Hash, out *[sha256.Size]byte, msg []byte) {
	u := h.(encoding.BinaryUnmarshaler)
	if err := u.UnmarshalBinary(k.inner); err != nil {
		panic("crypto/sha256 cannot unmarshal its own state: " + err.Error())
	}
	h.Write(msg)
	h.Sum(out[:0])
	if err := u.UnmarshalBinary(k.outer); err != nil {
		panic("crypto/sha256 cannot unmarshal its own state: " + err.Error())
	}
	h.Write(out[:])
	h.Sum(out[:0])
}

// proofMAC writes HMAC(StoredKey, msg) to out (see keyedMAC.sum for h).
func (sec *scramSecret) proofMAC(h hash.Hash, out *[sha256.Size]byte, msg []byte) {
	if sec.macs == nil {
		copy(out[:], hmacSHA256(sec.storedKey[:], string(msg)))
		return
	}
	sec.macs.stored.sum(h, out, msg)
}

// signatureMAC writes HMAC(ServerKey, msg) to out (see keyedMAC.sum for h).
func (sec *scramSecret) signatureMAC(h hash.Hash, out *[sha256.Size]byte, msg []byte) {
	if sec.macs == nil {
		copy(out[:], hmacSHA256(sec.serverKey[:], string(msg)))
		return
	}
	sec.macs.server.sum(h, out, msg)
}

// parseSCRAMSecret parses a verifier. Its errors never include the input.
func parseSCRAMSecret(s string) (scramSecret, error) {
	var sec scramSecret
	rest, ok := strings.CutPrefix(s, "SCRAM-SHA-256$")
	if !ok {
		return sec, errors.New("not a SCRAM-SHA-256 secret")
	}
	iterSalt, keys, ok := strings.Cut(rest, "$")
	if !ok {
		return sec, errors.New("malformed SCRAM-SHA-256 secret: missing keys")
	}
	iterStr, saltStr, ok := strings.Cut(iterSalt, ":")
	if !ok {
		return sec, errors.New("malformed SCRAM-SHA-256 secret: missing salt")
	}
	storedStr, serverStr, ok := strings.Cut(keys, ":")
	if !ok {
		return sec, errors.New("malformed SCRAM-SHA-256 secret: missing server key")
	}
	iter, err := strconv.Atoi(iterStr)
	if err != nil || iter < 1 || iter > scramMaxIterations {
		return sec, fmt.Errorf("malformed SCRAM-SHA-256 secret: iteration count must be between 1 and %d", scramMaxIterations)
	}
	salt, err := base64.StdEncoding.DecodeString(saltStr)
	if err != nil || len(salt) == 0 {
		return sec, errors.New("malformed SCRAM-SHA-256 secret: invalid salt")
	}
	if err := decodeKey(sec.storedKey[:], storedStr); err != nil {
		return sec, errors.New("malformed SCRAM-SHA-256 secret: invalid stored key")
	}
	if err := decodeKey(sec.serverKey[:], serverStr); err != nil {
		return sec, errors.New("malformed SCRAM-SHA-256 secret: invalid server key")
	}
	sec.iterations = iter
	sec.salt = salt
	return sec.withMACs(), nil
}

func decodeKey(dst []byte, s string) error {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return err
	}
	if len(b) != len(dst) {
		return errors.New("wrong key length")
	}
	copy(dst, b)
	return nil
}

// String formats the verifier like scram_build_secret.
func (s *scramSecret) String() string {
	enc := base64.StdEncoding
	return "SCRAM-SHA-256$" + strconv.Itoa(s.iterations) + ":" + enc.EncodeToString(s.salt) +
		"$" + enc.EncodeToString(s.storedKey[:]) + ":" + enc.EncodeToString(s.serverKey[:])
}

// scramKeys holds ClientKey and ServerKey derived from a salted password
// (RFC 5802 section 3). StoredKey is H(ClientKey).
type scramKeys struct {
	clientKey [scramKeyLen]byte
	serverKey [scramKeyLen]byte
}

// deriveSCRAMKeys runs PBKDF2 (Hi() in RFC 5802) over the SASLprep-normalized
// password and derives ClientKey and ServerKey. This is the expensive step.
func deriveSCRAMKeys(password string, salt []byte, iterations int) (scramKeys, error) {
	var k scramKeys
	salted, err := pbkdf2.Key(sha256.New, saslPrep(password), salt, iterations, scramKeyLen)
	if err != nil {
		return k, fmt.Errorf("derive SCRAM salted password: %w", err)
	}
	copy(k.clientKey[:], hmacSHA256(salted, "Client Key"))
	copy(k.serverKey[:], hmacSHA256(salted, "Server Key"))
	clear(salted)
	return k, nil
}

// secret builds the verifier for keys derived with salt and iterations.
func (k *scramKeys) secret(salt []byte, iterations int) scramSecret {
	return scramSecret{
		iterations: iterations,
		salt:       salt,
		storedKey:  sha256.Sum256(k.clientKey[:]),
		serverKey:  k.serverKey,
	}.withMACs()
}

func hmacSHA256(key []byte, msg ...string) []byte {
	mac := hmac.New(sha256.New, key)
	for _, m := range msg {
		mac.Write([]byte(m))
	}
	return mac.Sum(nil)
}

// saslPrep normalizes a password the way PostgreSQL does before SCRAM
// (pg_saslprep in src/common/saslprep.c): when the password is not valid
// under SASLprep, the raw bytes are used instead, so normalization never
// makes a password unusable.
//
// ASCII passwords, by far the most common, are returned unchanged; this is
// exact (SASLprep maps no printable ASCII character and prohibits ASCII
// control characters, which makes PostgreSQL fall back to the raw bytes).
// Other passwords are normalized with the PRECIS OpaqueString profile
// (RFC 8265), SASLprep's successor, exactly as pgx does; the two profiles
// agree for ordinary text but may differ for rare code points.
func saslPrep(password string) string {
	for i := 0; i < len(password); i++ {
		if password[i] >= 0x80 {
			normalized, err := precis.OpaqueString.String(password)
			if err != nil {
				return password
			}
			return normalized
		}
	}
	return password
}

// attrValue checks that attr has the form "<name>=<value>" and returns value.
func attrValue(attr string, name byte) (string, bool) {
	if len(attr) < 2 || attr[0] != name || attr[1] != '=' {
		return "", false
	}
	return attr[2:], true
}

// isExtensionAttr reports whether attr looks like "<letter>=...", the form of
// the optional extensions RFC 5802 allows (and PostgreSQL's read_any_attr
// skips).
func isExtensionAttr(attr string) bool {
	if len(attr) < 2 || attr[1] != '=' {
		return false
	}
	c := attr[0]
	return ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z')
}

// validNonce reports whether n is a non-empty run of printable ASCII
// characters other than ',' (RFC 5802 section 7 "printable").
func validNonce(n string) bool {
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		if c := n[i]; c < 0x21 || c > 0x7e || c == ',' {
			return false
		}
	}
	return true
}

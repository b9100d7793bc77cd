package auth

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
)

// CredentialKind says in which form a Credential holds a user's password.
type CredentialKind uint8

// Credential kinds. The zero CredentialKind is the kind of the zero
// Credential, which matches no password.
const (
	// KindPlain is a clear-text password.
	KindPlain CredentialKind = iota + 1
	// KindMD5 is PostgreSQL's MD5 form: "md5" + hex(md5(password + user)).
	KindMD5
	// KindSCRAM is a SCRAM-SHA-256 verifier:
	// SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>.
	KindSCRAM
)

// String returns "plain", "md5", "scram-sha-256" or "none".
func (k CredentialKind) String() string {
	switch k {
	case KindPlain:
		return "plain"
	case KindMD5:
		return "md5"
	case KindSCRAM:
		return "scram-sha-256"
	default:
		return "none"
	}
}

// Credential is what pgferry knows about a client user's password, in one of
// three forms (see CredentialKind). Build one with ParseCredential.
//
// A Credential is a small value that may be copied freely and is safe for
// concurrent use; all copies share one state. For a plain-text Credential the
// SCRAM verifier is derived the first time it is needed (PBKDF2 with
// PostgreSQL's default 4096 iterations and a random 16-byte salt) and then
// reused by every copy, so a storm of SCRAM logins for the same user runs
// PBKDF2 once. Its String and GoString print "[redacted]".
type Credential struct {
	st *credState // nil for the zero Credential
}

// credState is the immutable description of a credential plus the lazily
// derived SCRAM verifier of a plain-text password.
type credState struct {
	kind CredentialKind
	user string // role name the secret belongs to; not secret
	// secret is the clear-text password (KindPlain) or the 32 lowercase hex
	// digits after "md5" (KindMD5); unused for KindSCRAM.
	secret string
	scram  scramSecret // KindSCRAM

	// deriveOnce guards derived and deriveErr: the verifier derived from a
	// KindPlain password, computed at most once.
	deriveOnce sync.Once
	derived    scramSecret
	deriveErr  error
	// derivations counts PBKDF2 runs for derived; tests assert it stays 1.
	derivations atomic.Int32
}

// ParseCredential interprets stored, the secret kept for user (a PgBouncer
// auth_file field or PostgreSQL's pg_authid.rolpassword), the way PostgreSQL's
// get_password_type does: "SCRAM-SHA-256$..." is a SCRAM verifier, "md5"
// followed by 32 lowercase hex digits is an MD5 hash, anything else is a
// clear-text password. Unlike PostgreSQL, which silently treats an
// unparsable SCRAM secret as a clear-text password, a string that starts
// with "SCRAM-SHA-256$" but is malformed is an error: it is almost certainly
// a damaged verifier, not a password.
//
// An empty stored secret yields a plain Credential that never matches,
// because PostgreSQL never accepts an empty password (auth.c
// CheckPasswordAuth). Errors name user but never quote stored.
func ParseCredential(user, stored string) (Credential, error) {
	st := &credState{user: user}
	switch {
	case strings.HasPrefix(stored, "SCRAM-SHA-256$"):
		sec, err := parseSCRAMSecret(stored)
		if err != nil {
			return Credential{}, fmt.Errorf("parse credential for user %q: %w", user, err)
		}
		st.kind, st.scram = KindSCRAM, sec
	case isMD5Hash(stored):
		st.kind, st.secret = KindMD5, stored[3:]
	default:
		st.kind, st.secret = KindPlain, stored
	}
	return Credential{st: st}, nil
}

// isMD5Hash mirrors PostgreSQL's check (crypt.c get_password_type:
// MD5_PASSWD_LEN and MD5_PASSWD_CHARSET, lowercase hex only).
func isMD5Hash(s string) bool {
	if len(s) != 35 || !strings.HasPrefix(s, "md5") {
		return false
	}
	for i := 3; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Kind returns the form of the credential, or 0 ("none") for the zero
// Credential.
func (c Credential) Kind() CredentialKind {
	if c.st == nil {
		return 0
	}
	return c.st.kind
}

// usable reports whether the credential can ever match a password.
func (c Credential) usable() bool {
	return c.st != nil && !(c.st.kind == KindPlain && c.st.secret == "")
}

// CanSCRAM reports whether a SCRAM-SHA-256 exchange can be offered for this
// credential: it is a SCRAM verifier or a (non-empty) clear-text password.
func (c Credential) CanSCRAM() bool {
	return c.usable() && (c.st.kind == KindSCRAM || c.st.kind == KindPlain)
}

// CanMD5 reports whether MD5 authentication can be offered for this
// credential: it is an MD5 hash or a (non-empty) clear-text password.
func (c Credential) CanMD5() bool {
	return c.usable() && (c.st.kind == KindMD5 || c.st.kind == KindPlain)
}

// Plaintext returns the clear-text password of a KindPlain credential, which
// can also log in to a server (PgBouncer uses auth_file entries so when a
// database entry has no password).
func (c Credential) Plaintext() (string, bool) {
	if c.st == nil || c.st.kind != KindPlain || c.st.secret == "" {
		return "", false
	}
	return c.st.secret, true
}

// Same reports whether c and o are the same stored secret (one parsed
// auth_file entry; a reload that keeps an entry's text keeps the answer
// only if the entry is parsed anew to an equal secret).
func (c Credential) Same(o Credential) bool {
	if c.st == nil || o.st == nil {
		return c.st == o.st
	}
	if c.st == o.st {
		return true
	}
	if c.st.kind != o.st.kind {
		return false
	}
	if c.st.kind == KindSCRAM {
		a, b := c.st.scram, o.st.scram
		return a.iterations == b.iterations && string(a.salt) == string(b.salt) && a.storedKey == b.storedKey && a.serverKey == b.serverKey
	}
	return c.st.secret == o.st.secret
}

// String returns "[redacted]" so that a Credential never prints its secret.
func (c Credential) String() string { return "[redacted]" }

// GoString returns "[redacted]" so that %#v does not print the secret either.
func (c Credential) GoString() string { return "[redacted]" }

// scramSecret returns the SCRAM verifier of a KindSCRAM credential, or the
// verifier derived (once, then cached) from a KindPlain password.
func (c Credential) scramSecret() (scramSecret, error) {
	st := c.st
	switch {
	case !c.CanSCRAM():
		return scramSecret{}, fmt.Errorf("credential of kind %s cannot be used for SCRAM", c.Kind())
	case st.kind == KindSCRAM:
		return st.scram, nil
	}
	st.deriveOnce.Do(func() {
		st.derivations.Add(1)
		salt := make([]byte, scramDefaultSaltLen)
		rand.Read(salt) // never returns an error (crypto/rand docs)
		keys, err := deriveSCRAMKeys(st.secret, salt, scramDefaultIterations)
		if err != nil {
			st.deriveErr = err
			return
		}
		st.derived = keys.secret(salt, scramDefaultIterations)
	})
	return st.derived, st.deriveErr
}

// md5Hex returns hex(md5(a + b)).
func md5Hex(a, b string) string {
	sum := md5.Sum([]byte(a + b))
	return hex.EncodeToString(sum[:])
}

// MD5Response returns the answer to AuthenticationMD5Password with the given
// 4-byte salt: "md5" + hex(md5(hex(md5(password + user)) + salt)), as computed
// by libpq (fe-auth.c pg_password_sendauth) and checked by PostgreSQL
// (crypt.c md5_crypt_verify).
func MD5Response(user, password string, salt [4]byte) string {
	return md5SaltedResponse(md5Hex(password, user), salt)
}

// MD5ResponseFromHash is MD5Response from a stored hash, "md5" +
// hex(md5(password + user)) as pg_authid and auth_file hold it: an md5
// challenge can be answered without the password.
func MD5ResponseFromHash(stored string, salt [4]byte) string {
	return md5SaltedResponse(strings.TrimPrefix(stored, "md5"), salt)
}

// MD5Hash returns the stored hash ("md5" + 32 hex digits) of a KindMD5
// credential, which answers a server's md5 challenge (MD5ResponseFromHash).
func (c Credential) MD5Hash() (string, bool) {
	if c.st == nil || c.st.kind != KindMD5 {
		return "", false
	}
	return "md5" + c.st.secret, true
}

func md5SaltedResponse(innerHex string, salt [4]byte) string {
	return "md5" + md5Hex(innerHex, string(salt[:]))
}

// VerifyMD5 reports whether response, a client's PasswordMessage answering
// AuthenticationMD5Password with salt, matches cred. cred must be an MD5 hash
// or a clear-text password (CanMD5); for a clear-text password the hash is
// computed with user, which must be the role name from the startup message.
// The comparison is constant time. It always fails for an empty password or
// a SCRAM verifier, from which an MD5 response cannot be checked.
func VerifyMD5(user string, cred Credential, salt [4]byte, response string) bool {
	if !cred.CanMD5() {
		return false
	}
	inner := cred.st.secret
	if cred.st.kind == KindPlain {
		inner = md5Hex(inner, user)
	}
	want := md5SaltedResponse(inner, salt)
	return subtle.ConstantTimeCompare([]byte(want), []byte(response)) == 1
}

// VerifyPlain reports whether password, received in clear text (auth_type
// plain, AuthenticationCleartextPassword), matches cred, as PostgreSQL's
// plain_crypt_verify does: a clear-text credential is compared directly, an
// MD5 credential against md5(password + user) using the user cred was parsed
// with, and a SCRAM verifier by deriving StoredKey with the verifier's salt
// and iteration count (running PBKDF2, so this is slow by design). The
// comparison is constant time and does not leak the password length. An
// empty password never matches.
func VerifyPlain(cred Credential, password string) bool {
	if !cred.usable() || password == "" {
		return false
	}
	st := cred.st
	switch st.kind {
	case KindPlain:
		// Compare digests so that the comparison time does not depend on
		// where, or whether, the lengths differ.
		a, b := sha256.Sum256([]byte(st.secret)), sha256.Sum256([]byte(password))
		return subtle.ConstantTimeCompare(a[:], b[:]) == 1
	case KindMD5:
		got := md5Hex(password, st.user)
		return subtle.ConstantTimeCompare([]byte(got), []byte(st.secret)) == 1
	case KindSCRAM:
		keys, err := deriveSCRAMKeys(password, st.scram.salt, st.scram.iterations)
		if err != nil {
			return false
		}
		stored := sha256.Sum256(keys.clientKey[:])
		return subtle.ConstantTimeCompare(stored[:], st.scram.storedKey[:]) == 1
	}
	return false
}

// SCRAMVerifier builds the SCRAM-SHA-256 verifier PostgreSQL would store for
// password with the given salt and iteration count (after the same password
// normalization SCRAMClient and SCRAMServer apply, see saslPrep):
// "SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>"
// (src/common/scram-common.c scram_build_secret). It is meant for
// tests and tools; it panics if salt is empty or iterations is outside
// 1..10,000,000, which are programming errors.
func SCRAMVerifier(password string, salt []byte, iterations int) string {
	if len(salt) == 0 || iterations < 1 || iterations > scramMaxIterations {
		panic("auth.SCRAMVerifier: salt must be non-empty and iterations between 1 and 10000000")
	}
	keys, err := deriveSCRAMKeys(password, salt, iterations)
	if err != nil {
		panic("auth.SCRAMVerifier: " + err.Error())
	}
	sec := keys.secret(append([]byte(nil), salt...), iterations)
	return sec.String()
}

package auth

import (
	"container/list"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// SCRAMClient runs one SCRAM-SHA-256 exchange with a PostgreSQL server, with
// pgferry as the client and without channel binding (gs2 header "n,,"). The
// caller sends Mechanism and ClientFirst in SASLInitialResponse, passes the
// AuthenticationSASLContinue data to ClientFinal and sends the result in
// SASLResponse, then passes the AuthenticationSASLFinal data to
// VerifyServerFinal before trusting AuthenticationOk.
//
// A SCRAMClient is not safe for concurrent use and does no I/O. Once a method
// has returned an error, the exchange is over. Its String and GoString never
// print the password or keys.
type SCRAMClient struct {
	password        string     // dropped once ClientFinal has derived the keys
	passKeys        *SCRAMKeys // pass-through: keys instead of a password
	clientNonce     string
	clientFirstBare string

	state             exchangeState
	serverSignature   []byte // expected v= value, set by ClientFinal
	clientFirstCalled bool
}

// NewSCRAMClient prepares a SCRAM-SHA-256 exchange that proves knowledge of
// password. The client nonce is 18 random bytes, base64-encoded, like
// libpq's.
func NewSCRAMClient(password string) *SCRAMClient {
	raw := make([]byte, scramRawNonceLen)
	rand.Read(raw) // never returns an error (crypto/rand docs)
	nonce := base64.StdEncoding.EncodeToString(raw)
	// libpq sends an empty user name: the server uses the one from the
	// startup message (fe-auth-scram.c build_client_first_message).
	return &SCRAMClient{password: password, clientNonce: nonce, clientFirstBare: "n=,r=" + nonce}
}

// SCRAMKeys are what a SCRAM-SHA-256 exchange with a server needs in place
// of the password, for the secret's salt and iteration count: the
// ClientKey, recovered from a client's proof when it logged in against the
// same secret (SCRAM pass-through, as PgBouncer does), and the ServerKey.
// String never prints them.
type SCRAMKeys struct {
	keys       scramKeys
	salt       []byte
	iterations int
}

// String returns "[redacted]".
func (SCRAMKeys) String() string { return "[redacted]" }

// GoString returns "[redacted]".
func (SCRAMKeys) GoString() string { return "[redacted]" }

// ErrSCRAMSecretDiffers is returned when a server's SCRAM salt or
// iteration count differ from those of the secret whose keys pass-through
// uses: the server holds another secret for the role.
var ErrSCRAMSecretDiffers = errors.New("the server's SCRAM secret for the role differs from the auth_file's (salt or iteration count), so SCRAM pass-through is impossible; copy the role's current secret from pg_authid into auth_file")

// NewSCRAMClientWithKeys prepares an exchange that proves knowledge of the
// secret keys came from, without its password (SCRAM pass-through).
func NewSCRAMClientWithKeys(keys SCRAMKeys) *SCRAMClient {
	c := NewSCRAMClient("")
	c.passKeys = &keys
	return c
}

// Mechanism returns the SASL mechanism this client uses, "SCRAM-SHA-256".
func (c *SCRAMClient) Mechanism() string { return MechanismSCRAMSHA256 }

// ClientFirst returns the client-first-message for SASLInitialResponse. It
// returns the same message every time it is called before ClientFinal; the
// caller owns the returned slice.
func (c *SCRAMClient) ClientFirst() []byte {
	c.clientFirstCalled = true
	return []byte(gs2NoBinding + c.clientFirstBare)
}

// ClientFinal consumes the server-first-message and returns the
// client-final-message carrying the proof. The caller owns the returned slice.
// It checks that the server's nonce extends ours, that the salt is valid
// base64 and that the iteration count is between 1 (PostgreSQL's
// scram_iterations may be lowered below the default 4096) and 10,000,000,
// which bounds the PBKDF2 work a hostile server can demand.
//
// PBKDF2 results are cached process-wide by (password, salt, iterations), so
// many connections logging in as the same role, whose salt PostgreSQL keeps
// until the password changes, derive the keys once.
func (c *SCRAMClient) ClientFinal(serverFirst []byte) ([]byte, error) {
	if c.state != stateInitial || !c.clientFirstCalled {
		c.state = stateFailed
		return nil, errExchangeState
	}
	c.state = stateFailed
	attrs := strings.Split(string(serverFirst), ",")
	if attrs[0] != "" && attrs[0][0] == 'm' {
		return nil, errors.New("invalid SCRAM server-first-message: unsupported mandatory extension")
	}
	if len(attrs) < 3 {
		return nil, errors.New("invalid SCRAM server-first-message: expected attributes r, s and i")
	}
	nonce, ok := attrValue(attrs[0], 'r')
	if !ok {
		return nil, errors.New("invalid SCRAM server-first-message: expected attribute r")
	}
	if !validNonce(nonce) || !strings.HasPrefix(nonce, c.clientNonce) || len(nonce) == len(c.clientNonce) {
		return nil, errors.New("invalid SCRAM server-first-message: nonce does not extend the client nonce")
	}
	saltB64, ok := attrValue(attrs[1], 's')
	if !ok {
		return nil, errors.New("invalid SCRAM server-first-message: expected attribute s")
	}
	salt, err := base64.StdEncoding.DecodeString(saltB64)
	if err != nil || len(salt) == 0 {
		return nil, errors.New("invalid SCRAM server-first-message: invalid salt")
	}
	iterStr, ok := attrValue(attrs[2], 'i')
	if !ok {
		return nil, errors.New("invalid SCRAM server-first-message: expected attribute i")
	}
	iterations, err := strconv.Atoi(iterStr)
	if err != nil || iterations < 1 || iterations > scramMaxIterations {
		return nil, fmt.Errorf("invalid SCRAM server-first-message: iteration count must be between 1 and %d", scramMaxIterations)
	}
	for _, a := range attrs[3:] {
		if !isExtensionAttr(a) {
			return nil, errors.New("invalid SCRAM server-first-message: invalid attribute")
		}
	}

	var keys scramKeys
	if pk := c.passKeys; pk != nil {
		if pk.iterations != iterations || !hmac.Equal(pk.salt, salt) {
			return nil, ErrSCRAMSecretDiffers
		}
		keys = pk.keys
	} else {
		if keys, err = clientKeys.get(c.password, salt, iterations); err != nil {
			return nil, err
		}
	}
	c.password, c.passKeys = "", nil

	withoutProof := "c=" + base64.StdEncoding.EncodeToString([]byte(gs2NoBinding)) + ",r=" + nonce
	authMessage := c.clientFirstBare + "," + string(serverFirst) + "," + withoutProof
	storedKey := sha256.Sum256(keys.clientKey[:])
	proof := hmacSHA256(storedKey[:], authMessage)
	for i := range proof {
		proof[i] ^= keys.clientKey[i]
	}
	c.serverSignature = hmacSHA256(keys.serverKey[:], authMessage)
	c.state = stateStarted
	return []byte(withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof)), nil
}

// VerifyServerFinal checks the server-final-message: its v= signature must
// prove that the server knows the verifier (compared in constant time). A
// server error ("e=...") is returned as an error quoting the server's error
// name. Only after this returns nil has the server been authenticated.
func (c *SCRAMClient) VerifyServerFinal(serverFinal []byte) error {
	if c.state != stateStarted {
		c.state = stateFailed
		return errExchangeState
	}
	c.state = stateFailed
	msg := string(serverFinal)
	if e, ok := attrValue(msg, 'e'); ok {
		name, _, _ := strings.Cut(e, ",")
		return fmt.Errorf("server rejected SCRAM exchange: %q", name)
	}
	v, ok := attrValue(msg, 'v')
	if !ok {
		return errors.New("invalid SCRAM server-final-message: expected attribute v")
	}
	v, _, _ = strings.Cut(v, ",") // extensions are allowed after v=
	sig, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return errors.New("invalid SCRAM server-final-message: invalid server signature encoding")
	}
	if !hmac.Equal(sig, c.serverSignature) {
		return errors.New("SCRAM server signature mismatch: the server does not know the password")
	}
	c.state = stateDone
	return nil
}

// String describes the exchange without secrets.
func (c SCRAMClient) String() string { return "auth.SCRAMClient{mechanism: SCRAM-SHA-256}" }

// GoString is String, so that %#v does not print the password either.
func (c SCRAMClient) GoString() string { return c.String() }

// clientKeyCacheSize bounds the number of (password, salt, iterations)
// derivations kept; one per distinct server role is plenty.
const clientKeyCacheSize = 64

// clientKeys caches the keys SCRAMClient derives, process-wide.
var clientKeys = newKeyCache(clientKeyCacheSize)

// keyCache is a bounded, concurrency-safe LRU cache of SCRAM keys derived
// with PBKDF2. Entries are keyed by sha256(password), the salt and the
// iteration count, so the cache never holds a password in clear text; it
// does hold the derived ClientKey and ServerKey, which are as sensitive as
// the password towards that server (they are what a client needs to log
// in), exactly like the SCRAMClient that would otherwise hold them.
//
// Concurrent misses for the same key wait for a single derivation.
type keyCache struct {
	max int

	mu      sync.Mutex // guards entries and lru; PBKDF2 never runs under it
	entries map[keyCacheKey]*list.Element
	lru     *list.List // of *keyCacheEntry, most recently used first

	// derivations counts PBKDF2 runs, for tests.
	derivations atomic.Int64
}

type keyCacheKey struct {
	passwordHash [sha256.Size]byte
	salt         string
	iterations   int
}

type keyCacheEntry struct {
	key  keyCacheKey
	once sync.Once // guards keys and err
	keys scramKeys
	err  error
}

func newKeyCache(max int) *keyCache {
	return &keyCache{max: max, entries: map[keyCacheKey]*list.Element{}, lru: list.New()}
}

// get returns the keys for password, salt and iterations, deriving them on a
// miss. An entry evicted while its derivation runs is still completed for the
// callers already waiting on it.
func (kc *keyCache) get(password string, salt []byte, iterations int) (scramKeys, error) {
	k := keyCacheKey{passwordHash: sha256.Sum256([]byte(password)), salt: string(salt), iterations: iterations}
	kc.mu.Lock()
	var e *keyCacheEntry
	if el, ok := kc.entries[k]; ok {
		kc.lru.MoveToFront(el)
		e = el.Value.(*keyCacheEntry)
	} else {
		e = &keyCacheEntry{key: k}
		kc.entries[k] = kc.lru.PushFront(e)
		for kc.lru.Len() > kc.max {
			oldest := kc.lru.Back()
			kc.lru.Remove(oldest)
			delete(kc.entries, oldest.Value.(*keyCacheEntry).key)
		}
	}
	kc.mu.Unlock()

	e.once.Do(func() {
		kc.derivations.Add(1)
		e.keys, e.err = deriveSCRAMKeys(password, salt, iterations)
	})
	return e.keys, e.err
}

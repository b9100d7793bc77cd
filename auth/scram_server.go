package auth

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync"
)

type exchangeState uint8

const (
	stateInitial exchangeState = iota
	stateStarted
	stateDone   // the exchange completed (successfully or with a mismatch)
	stateFailed // a ProtocolError or misuse ended the exchange
)

// SCRAMServer runs one SCRAM-SHA-256 (or SCRAM-SHA-256-PLUS) exchange with
// a client, with pgferry as the server (RFC 5802 section 5, PostgreSQL
// protocol-flow "SASL Authentication"). The caller sends
// AuthenticationSASL with Mechanisms, passes the SASLInitialResponse to
// Start and sends its result as AuthenticationSASLContinue, passes the
// SASLResponse to Finish and, on success, sends the result as
// AuthenticationSASLFinal followed by AuthenticationOk.
//
// A SCRAMServer is not safe for concurrent use and does no I/O. Once a
// method has returned an error, the exchange is over. Its String and
// GoString never print keys or nonces.
type SCRAMServer struct {
	user           string // role name from the startup message; not secret
	secret         scramSecret
	doomed         bool   // unknown user or unusable credential: Finish must fail
	channelBinding []byte // tls-server-end-point hash; nil disables -PLUS

	state    exchangeState
	cbInUse  bool // client selected SCRAM-SHA-256-PLUS
	passOK   bool // passKeys holds the keys of a successful Finish
	gs2Len   int  // length of the gs2 header (e.g. "n,,") that starts clientFirst
	nonceEnd int  // serverFirst[2:nonceEnd] is the nonce (client's + server's)
	// clientFirst is the client-first-message as sent (its gs2 header, then
	// the bare message).
	clientFirst string
	// auth is the AuthMessage's start: client-first-message-bare "," then
	// server-first-message "," (which Start returns as a subslice). Finish
	// appends the client-final-message-without-proof, then writes the
	// server-final-message after it: one buffer for the whole exchange.
	auth     []byte
	firstOff int // auth[firstOff:firstEnd] is the server-first-message
	firstEnd int
	rawNonce [scramRawNonceLen]byte
	mac      [2][scramKeyLen]byte // ClientKey, then ServerSignature
	passKeys SCRAMKeys
}

// NewSCRAMServer prepares a SCRAM exchange for user, whose credential is
// cred. channelBinding is the tls-server-end-point hash of pgferry's own
// certificate (ChannelBindingHash) when the client connection uses TLS, or
// nil to offer only SCRAM-SHA-256; the slice is retained and must not be
// modified.
//
// cred must satisfy CanSCRAM. For a clear-text credential this may run
// PBKDF2 once per credential (see Credential). It returns an error, and no
// server, for an MD5 or empty credential; callers that want such a user to
// fail like any wrong password (as PostgreSQL does for a role without a SCRAM
// secret) should fall back to NewSCRAMServerForUnknownUser.
func NewSCRAMServer(user string, cred Credential, channelBinding []byte) (*SCRAMServer, error) {
	sec, err := cred.scramSecret()
	if err != nil {
		return nil, fmt.Errorf("SCRAM for user %q: %w", user, err)
	}
	return &SCRAMServer{user: user, secret: sec, channelBinding: channelBinding}, nil
}

// mockNonce is a per-process random key for mock salts, like PostgreSQL's
// mock_auth_nonce (auth-scram.c scram_mock_salt).
var mockNonce = sync.OnceValue(func() []byte {
	b := make([]byte, 32)
	rand.Read(b) // never returns an error (crypto/rand docs)
	return b
})

// mockMACs key the MACs of unknown users' exchanges, made once like a real
// verifier's, so that checking a proof costs the same whether the user
// exists or not.
var mockMACs = sync.OnceValue(func() *scramMACs {
	var stored, server [scramKeyLen]byte
	rand.Read(stored[:]) // never returns an error (crypto/rand docs)
	rand.Read(server[:])
	return &scramMACs{stored: newKeyedMAC(stored[:]), server: newKeyedMAC(server[:])}
})

// NewSCRAMServerForUnknownUser prepares a SCRAM exchange for a user that has
// no credential. It behaves exactly like NewSCRAMServer for a real user, with
// a salt derived from user and a per-process random key (stable for the life
// of the process, like PostgreSQL's scram_mock_salt) and PostgreSQL's
// default iteration count, but Finish always fails with ErrPasswordMismatch
// once the client's final message has been checked. A client therefore
// cannot tell whether the user exists. See NewSCRAMServer for
// channelBinding.
func NewSCRAMServerForUnknownUser(user string, channelBinding []byte) *SCRAMServer {
	mac := hmacSHA256(mockNonce(), "pgferry scram mock salt", user)
	sec := scramSecret{iterations: scramDefaultIterations, salt: mac[:scramDefaultSaltLen], macs: mockMACs()}
	return &SCRAMServer{user: user, secret: sec, doomed: true, channelBinding: channelBinding}
}

// Mechanisms returns the SASL mechanisms to list in AuthenticationSASL, most
// preferred first: SCRAM-SHA-256-PLUS and SCRAM-SHA-256 when channel binding
// is available, else only SCRAM-SHA-256 (auth-scram.c
// scram_get_mechanisms). The caller owns the returned slice.
func (s *SCRAMServer) Mechanisms() []string {
	if s.channelBinding != nil {
		return []string{MechanismSCRAMSHA256Plus, MechanismSCRAMSHA256}
	}
	return []string{MechanismSCRAMSHA256}
}

// AppendMechanisms appends the mechanisms of Mechanisms as
// AuthenticationSASL lists them: each NUL-terminated, then an empty name.
func (s *SCRAMServer) AppendMechanisms(b []byte) []byte {
	if s.channelBinding != nil {
		b = append(append(b, MechanismSCRAMSHA256Plus...), 0)
	}
	return append(append(b, MechanismSCRAMSHA256...), 0, 0)
}

// Start consumes the client's mechanism choice and client-first-message
// (SASLInitialResponse) and returns the server-first-message to send in
// AuthenticationSASLContinue. Inputs are copied; the returned slice is the
// exchange's own and must not be modified. Malformed input yields a
// *ProtocolError.
//
// The checks follow auth-scram.c (scram_init, read_client_first_message):
// SCRAM-SHA-256-PLUS is accepted only when it was offered and then requires
// a "p=tls-server-end-point" gs2 header; a "p=" header with plain
// SCRAM-SHA-256 is rejected; a "y" header while we offer channel binding is
// a downgrade attempt (RFC 5802 section 6) and is rejected; authorization
// identities and mandatory extensions ("m=") are not supported. The user
// name inside the message is ignored: PostgreSQL uses the startup message's.
func (s *SCRAMServer) Start(mechanism string, clientFirst []byte) ([]byte, error) {
	if s.state != stateInitial {
		s.state = stateFailed
		return nil, errExchangeState
	}
	s.state = stateFailed // until proven otherwise
	switch {
	case mechanism == MechanismSCRAMSHA256Plus && s.channelBinding != nil:
		s.cbInUse = true
	case mechanism == MechanismSCRAMSHA256:
	default:
		return nil, protoErr("client selected an invalid SASL authentication mechanism")
	}
	msg := string(clientFirst) // the exchange's only copy of it
	if strings.IndexByte(msg, 0) >= 0 {
		return nil, protoErr("malformed SCRAM message: unexpected NUL byte")
	}
	// gs2-header = gs2-cbind-flag "," [ authzid ] "," (RFC 5802 section 7).
	flag, rest, ok1 := strings.Cut(msg, ",")
	authzid, bare, ok2 := strings.Cut(rest, ",")
	switch {
	case flag == "n" || flag == "y":
		if s.cbInUse {
			return nil, protoErr("channel binding negotiation error: the client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not include channel binding data")
		}
		// "y": the client could bind but thinks we cannot. If we offered
		// -PLUS, someone removed it from the list: a downgrade attack.
		if flag == "y" && s.channelBinding != nil {
			return nil, protoErr("channel binding negotiation error: the client supports SCRAM channel binding but thinks the server does not; however, this server does support channel binding")
		}
	case strings.HasPrefix(flag, "p="):
		if !s.cbInUse {
			return nil, protoErr("channel binding negotiation error: the client selected SCRAM-SHA-256 without channel binding, but the SCRAM message includes channel binding data")
		}
		if flag[2:] != cbTypeServerEndPnt {
			return nil, protoErr("unsupported SCRAM channel-binding type")
		}
	default:
		return nil, protoErr("malformed SCRAM message: unexpected channel-binding flag")
	}
	if !ok1 || !ok2 {
		return nil, protoErr("malformed SCRAM message: invalid gs2 header")
	}
	if authzid != "" {
		return nil, protoErr("client uses authorization identity, but it is not supported")
	}
	// The attributes: n=, r=, then optional extensions.
	first, rest, more := strings.Cut(bare, ",")
	if first != "" && first[0] == 'm' {
		return nil, protoErr("client requires an unsupported SCRAM extension")
	}
	if !more {
		return nil, protoErr("malformed SCRAM message: expected attributes \"n\" and \"r\"")
	}
	if _, ok := attrValue(first, 'n'); !ok {
		return nil, protoErr("malformed SCRAM message: expected attribute \"n\"")
	}
	second, rest, more := strings.Cut(rest, ",")
	clientNonce, ok := attrValue(second, 'r')
	if !ok {
		return nil, protoErr("malformed SCRAM message: expected attribute \"r\"")
	}
	if !validNonce(clientNonce) {
		return nil, protoErr("malformed SCRAM message: invalid client nonce")
	}
	for more {
		var a string
		a, rest, more = strings.Cut(rest, ",")
		if !isExtensionAttr(a) {
			return nil, protoErr("malformed SCRAM message: invalid attribute")
		}
	}

	rand.Read(s.rawNonce[:]) // never returns an error (crypto/rand docs)
	enc := base64.StdEncoding
	firstLen := len("r=") + len(clientNonce) + enc.EncodedLen(scramRawNonceLen) +
		len(",s=") + enc.EncodedLen(len(s.secret.salt)) + len(",i=") + 20
	// Room for the client-final-message-without-proof and the
	// server-final-message too, so Finish usually appends in place.
	b := make([]byte, 0, len(bare)+1+firstLen+1+len(msg)+128)
	b = append(append(b, bare...), ',')
	s.firstOff = len(b)
	b = append(b, "r="...)
	b = append(b, clientNonce...)
	b = enc.AppendEncode(b, s.rawNonce[:])
	s.nonceEnd = len(b) - s.firstOff
	b = append(b, ",s="...)
	b = enc.AppendEncode(b, s.secret.salt)
	b = append(b, ",i="...)
	b = strconv.AppendInt(b, int64(s.secret.iterations), 10)
	s.firstEnd = len(b)
	b = append(b, ',')
	s.auth = b
	s.clientFirst = msg
	s.gs2Len = len(flag) + 2
	s.state = stateStarted
	return s.auth[s.firstOff:s.firstEnd:s.firstEnd], nil
}

// Finish consumes the client-final-message (SASLResponse) and returns the
// server-final-message to send in AuthenticationSASLFinal. The returned
// slice is the exchange's own and must not be modified; clientFinal is not
// kept.
//
// A wrong proof, and any exchange started with NewSCRAMServerForUnknownUser,
// returns an error wrapping ErrPasswordMismatch (SQLSTATE 28P01). Malformed
// input (syntax, base64, a channel binding that does not equal the gs2
// header plus the binding data, a nonce other than the one from Start)
// returns a *ProtocolError, checked identically for known and unknown users
// (auth-scram.c read_client_final_message, verify_final_nonce,
// verify_client_proof). The proof is compared in constant time.
func (s *SCRAMServer) Finish(clientFinal []byte) ([]byte, error) {
	if s.state != stateStarted {
		s.state = stateFailed
		return nil, errExchangeState
	}
	s.state = stateFailed
	if bytes.IndexByte(clientFinal, 0) >= 0 {
		return nil, protoErr("malformed SCRAM message: unexpected NUL byte")
	}
	// Attributes c=, r=, optional extensions, and p= last. The message is
	// read in place: nothing of it is kept.
	cAttr, rest, ok1 := bytes.Cut(clientFinal, comma)
	rAttr, _, ok2 := bytes.Cut(rest, comma)
	if !ok1 || !ok2 {
		return nil, protoErr("malformed SCRAM message: expected attributes \"c\", \"r\" and \"p\"")
	}
	cbB64, ok := attrValueBytes(cAttr, 'c')
	if !ok {
		return nil, protoErr("malformed SCRAM message: expected attribute \"c\"")
	}
	// The channel binding attribute must be the gs2 header, then (with
	// -PLUS) the binding data: at most the header and a SHA-512 hash.
	var cbBuf [96]byte
	cb, err := base64.StdEncoding.AppendDecode(cbBuf[:0], cbB64)
	if err != nil {
		return nil, protoErr("malformed SCRAM message: invalid channel binding encoding")
	}
	gs2 := s.clientFirst[:s.gs2Len]
	var binding []byte
	if s.cbInUse {
		binding = s.channelBinding
	}
	cbOK := len(cb) == len(gs2)+len(binding) && string(cb[:len(gs2)]) == gs2 &&
		subtle.ConstantTimeCompare(cb[len(gs2):], binding) == 1
	if !cbOK {
		if s.cbInUse {
			return nil, protoErr("SCRAM channel binding check failed")
		}
		return nil, protoErr("unexpected SCRAM channel-binding attribute in client-final-message")
	}
	nonce, ok := attrValueBytes(rAttr, 'r')
	if !ok {
		return nil, protoErr("malformed SCRAM message: expected attribute \"r\"")
	}
	if string(nonce) != string(s.auth[s.firstOff+2:s.firstOff+s.nonceEnd]) {
		return nil, protoErr("invalid SCRAM response: nonce mismatch")
	}
	cut := bytes.LastIndexByte(clientFinal, ',')
	last := clientFinal[cut+1:]
	// Between r= and p=: nothing, or ",ext1,ext2...".
	if mid := clientFinal[len(cAttr)+1+len(rAttr) : cut]; len(mid) > 0 {
		mid = mid[1:]
		for {
			a, rest, more := bytes.Cut(mid, comma)
			if !isExtensionAttr(string(a)) || a[0] == 'p' {
				return nil, protoErr("malformed SCRAM message: invalid attribute")
			}
			if !more {
				break
			}
			mid = rest
		}
	}
	proofB64, ok := attrValueBytes(last, 'p')
	if !ok {
		return nil, protoErr("malformed SCRAM message: expected attribute \"p\"")
	}
	var proof [48]byte // room for any encoding of a 32-byte proof
	n := 0
	if base64.StdEncoding.DecodedLen(len(proofB64)) <= len(proof) {
		n, err = base64.StdEncoding.Decode(proof[:], proofB64)
	}
	if err != nil || n != scramKeyLen {
		return nil, protoErr("malformed SCRAM message: malformed proof in client-final-message")
	}
	s.auth = append(s.auth, clientFinal[:cut]...) // AuthMessage

	// ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); the proof is
	// right iff H(ClientKey) == StoredKey (RFC 5802 section 3).
	h := sha256.New()
	clientKey := &s.mac[0]
	s.secret.proofMAC(h, clientKey, s.auth)
	for i := range clientKey {
		clientKey[i] ^= proof[i]
	}
	got := sha256.Sum256(clientKey[:])
	match := subtle.ConstantTimeCompare(got[:], s.secret.storedKey[:]) == 1
	s.state = stateDone
	if !match || s.doomed {
		return nil, fmt.Errorf("SCRAM authentication for user %q: %w", s.user, ErrPasswordMismatch)
	}
	s.passKeys = SCRAMKeys{salt: s.secret.salt, iterations: s.secret.iterations}
	s.passKeys.keys.clientKey = *clientKey
	s.passKeys.keys.serverKey = s.secret.serverKey
	s.passOK = true
	clear(clientKey[:]) // the copy in passKeys is the one that is needed
	sig := &s.mac[1]
	s.secret.signatureMAC(h, sig, s.auth)
	end := len(s.auth)
	out := append(s.auth, "v="...)
	out = base64.StdEncoding.AppendEncode(out, sig[:])
	return out[end:len(out):len(out)], nil
}

// comma separates SCRAM attributes.
var comma = []byte{','}

// attrValueBytes is attrValue over bytes.
func attrValueBytes(attr []byte, name byte) ([]byte, bool) {
	if len(attr) < 2 || attr[0] != name || attr[1] != '=' {
		return nil, false
	}
	return attr[2:], true
}

// PassThroughKeys returns, after a successful Finish, the keys the client
// proved it holds (its ClientKey, recovered from its proof, and the
// secret's ServerKey): with them pgferry can log in to a server that holds
// the same secret, without the password (SCRAM pass-through).
func (s *SCRAMServer) PassThroughKeys() (SCRAMKeys, bool) {
	if !s.passOK {
		return SCRAMKeys{}, false
	}
	return s.passKeys, true
}

// String describes the exchange without secrets.
func (s SCRAMServer) String() string {
	return fmt.Sprintf("auth.SCRAMServer{user: %q, channel binding: %t}", s.user, s.channelBinding != nil)
}

// GoString is String, so that %#v does not print keys either.
func (s SCRAMServer) GoString() string { return s.String() }

// ChannelBindingHash returns the tls-server-end-point channel binding data
// of cert (RFC 5929 section 4.1): the certificate's DER hashed with the hash
// of its signature algorithm, or SHA-256 when that is MD5 or SHA-1. It
// returns nil when the binding is undefined for the algorithm (Ed25519,
// unknown algorithms); PostgreSQL then does not offer SCRAM-SHA-256-PLUS,
// and passing nil to NewSCRAMServer does the same.
func ChannelBindingHash(cert *x509.Certificate) []byte {
	var h hash.Hash
	switch cert.SignatureAlgorithm {
	case x509.MD5WithRSA, x509.SHA1WithRSA, x509.ECDSAWithSHA1, x509.DSAWithSHA1,
		x509.SHA256WithRSA, x509.SHA256WithRSAPSS, x509.ECDSAWithSHA256, x509.DSAWithSHA256:
		h = sha256.New()
	case x509.SHA384WithRSA, x509.SHA384WithRSAPSS, x509.ECDSAWithSHA384:
		h = sha512.New384()
	case x509.SHA512WithRSA, x509.SHA512WithRSAPSS, x509.ECDSAWithSHA512:
		h = sha512.New()
	default:
		return nil
	}
	h.Write(cert.Raw)
	return h.Sum(nil)
}

package auth

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
)

// exchange runs a full in-process SCRAM exchange and returns the server's
// Finish error.
func exchange(t *testing.T, srv *SCRAMServer, password string) error {
	t.Helper()
	cl := NewSCRAMClient(password)
	sf, err := srv.Start(cl.Mechanism(), cl.ClientFirst())
	if err != nil {
		return err
	}
	cf, err := cl.ClientFinal(sf)
	if err != nil {
		t.Fatalf("ClientFinal: %v", err)
	}
	final, err := srv.Finish(cf)
	if err != nil {
		return err
	}
	if err := cl.VerifyServerFinal(final); err != nil {
		t.Fatalf("VerifyServerFinal: %v", err)
	}
	return nil
}

func TestSCRAMClientAndServerAgreeOnlyOnTheRightPassword(t *testing.T) {
	verifier := SCRAMVerifier("correct horse", []byte("0123456789abcdef"), 4096)
	tests := []struct {
		name, stored, password string
		want                   error
	}{
		{"plain credential", "correct horse", "correct horse", nil},
		{"verifier credential", verifier, "correct horse", nil},
		{"plain credential wrong password", "correct horse", "battery staple", ErrPasswordMismatch},
		{"verifier credential wrong password", verifier, "battery staple", ErrPasswordMismatch},
		{"non-ASCII password normalized", "pässwörd", "pässwörd", nil},
		{"compatibility character normalized like PostgreSQL", "I\u2168", "I\u2168", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := NewSCRAMServer("alice", mustCred(t, "alice", tc.stored), nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := exchange(t, srv, tc.password); !errors.Is(err, tc.want) {
				t.Fatalf("exchange error %v, want %v", err, tc.want)
			}
		})
	}
}

func TestSCRAMServerForUnknownUserFailsLikeAWrongPassword(t *testing.T) {
	srv := NewSCRAMServerForUnknownUser("ghost", nil)
	// Even the "right" password for some other verifier cannot succeed.
	if err := exchange(t, srv, "anything"); !errors.Is(err, ErrPasswordMismatch) {
		t.Fatalf("err = %v, want ErrPasswordMismatch", err)
	}
	// The mock salt is stable per user within the process and differs between
	// users, like a real role's salt.
	first := func(user string) string {
		s := NewSCRAMServerForUnknownUser(user, nil)
		sf, err := s.Start(MechanismSCRAMSHA256, []byte("n,,n=,r=abc"))
		if err != nil {
			t.Fatal(err)
		}
		_, after, _ := strings.Cut(string(sf), ",s=")
		return after
	}
	if a, b := first("ghost"), first("ghost"); a != b || a == first("spirit") {
		t.Fatal("mock salt must be deterministic per user and differ between users")
	}
	if !strings.HasSuffix(first("ghost"), ",i=4096") {
		t.Fatalf("mock iteration count: %s", first("ghost"))
	}
}

func TestNewSCRAMServerRejectsCredentialsWithoutSCRAMSecret(t *testing.T) {
	for _, stored := range []string{"md5" + strings.Repeat("a", 32), ""} {
		if _, err := NewSCRAMServer("u", mustCred(t, "u", stored), nil); err == nil {
			t.Errorf("NewSCRAMServer accepted a %v credential (empty=%t)", mustCred(t, "u", stored).Kind(), stored == "")
		}
	}
	if _, err := NewSCRAMServer("u", Credential{}, nil); err == nil {
		t.Error("NewSCRAMServer accepted the zero Credential")
	}
}

func TestSCRAMServerStartRejectsMalformedClientFirst(t *testing.T) {
	cb := []byte("0123456789abcdef0123456789abcdef")
	tests := []struct {
		name, mechanism, msg string
		cb                   []byte
	}{
		{"unknown mechanism", "SCRAM-SHA-1", "n,,n=,r=abc", nil},
		{"PLUS not offered", MechanismSCRAMSHA256Plus, "p=tls-server-end-point,,n=,r=abc", nil},
		{"p= without binding", MechanismSCRAMSHA256, "p=tls-server-end-point,,n=,r=abc", nil},
		{"p= with plain mechanism though binding offered", MechanismSCRAMSHA256, "p=tls-server-end-point,,n=,r=abc", cb},
		{"y downgrade while PLUS offered", MechanismSCRAMSHA256, "y,,n=,r=abc", cb},
		{"n with PLUS mechanism", MechanismSCRAMSHA256Plus, "n,,n=,r=abc", cb},
		{"unsupported binding type", MechanismSCRAMSHA256Plus, "p=tls-unique,,n=,r=abc", cb},
		{"bad flag", MechanismSCRAMSHA256, "x,,n=,r=abc", nil},
		{"authzid", MechanismSCRAMSHA256, "n,a=admin,n=,r=abc", nil},
		{"truncated header", MechanismSCRAMSHA256, "n,", nil},
		{"empty", MechanismSCRAMSHA256, "", nil},
		{"mandatory extension", MechanismSCRAMSHA256, "n,,m=ext,n=,r=abc", nil},
		{"missing user attribute", MechanismSCRAMSHA256, "n,,r=abc", nil},
		{"missing nonce", MechanismSCRAMSHA256, "n,,n=", nil},
		{"empty nonce", MechanismSCRAMSHA256, "n,,n=,r=", nil},
		{"nonce with space", MechanismSCRAMSHA256, "n,,n=,r=a b", nil},
		{"garbage extension", MechanismSCRAMSHA256, "n,,n=,r=abc,!!", nil},
		{"NUL byte", MechanismSCRAMSHA256, "n,,n=,r=abc\x00", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := NewSCRAMServer("u", mustCred(t, "u", "pw"), tc.cb)
			if err != nil {
				t.Fatal(err)
			}
			_, err = srv.Start(tc.mechanism, []byte(tc.msg))
			var pe *ProtocolError
			if !errors.As(err, &pe) {
				t.Fatalf("Start error %v, want *ProtocolError", err)
			}
			if _, err := srv.Finish([]byte("c=biws,r=abc,p=AAAA")); err == nil {
				t.Fatal("Finish after failed Start succeeded")
			}
		})
	}
}

func TestSCRAMServerStartAcceptsValidClientFirstVariants(t *testing.T) {
	cb := []byte("binding")
	for _, tc := range []struct {
		mechanism, msg string
		cb             []byte
	}{
		{MechanismSCRAMSHA256, "n,,n=,r=abc", nil},
		{MechanismSCRAMSHA256, "n,,n=alice,r=abc", nil},
		{MechanismSCRAMSHA256, "y,,n=,r=abc", nil}, // client can bind, we cannot: fine
		{MechanismSCRAMSHA256, "n,,n=,r=abc,x=ext", nil},
		{MechanismSCRAMSHA256, "n,,n=,r=abc", cb}, // client without binding over TLS
		{MechanismSCRAMSHA256Plus, "p=tls-server-end-point,,n=,r=abc", cb},
	} {
		srv, err := NewSCRAMServer("u", mustCred(t, "u", "pw"), tc.cb)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := srv.Start(tc.mechanism, []byte(tc.msg)); err != nil {
			t.Errorf("Start(%q, %q): %v", tc.mechanism, tc.msg, err)
		}
	}
}

func TestSCRAMServerFinishRejectsTamperedClientFinal(t *testing.T) {
	// Build a genuine client-final, then tamper with it.
	cl := NewSCRAMClient("pw")
	srv, err := NewSCRAMServer("u", mustCred(t, "u", "pw"), nil)
	if err != nil {
		t.Fatal(err)
	}
	sf, err := srv.Start(cl.Mechanism(), cl.ClientFirst())
	if err != nil {
		t.Fatal(err)
	}
	cfBytes, err := cl.ClientFinal(sf)
	if err != nil {
		t.Fatal(err)
	}
	cf := string(cfBytes)
	nonce, _, _ := strings.Cut(strings.TrimPrefix(string(sf), "r="), ",")
	proof := cf[strings.LastIndex(cf, ",p=")+3:]
	rawProof, _ := base64.StdEncoding.DecodeString(proof)
	rawProof[0] ^= 0xff
	badProof := base64.StdEncoding.EncodeToString(rawProof)

	tests := []struct {
		name, msg string
		want      error // ErrPasswordMismatch, or nil for *ProtocolError
	}{
		{"tampered proof", strings.Replace(cf, proof, badProof, 1), ErrPasswordMismatch},
		{"tampered nonce", strings.Replace(cf, nonce, nonce+"x", 1), nil},
		{"truncated nonce", strings.Replace(cf, nonce, nonce[:len(nonce)-1], 1), nil},
		{"bad proof base64", strings.Replace(cf, proof, "!!!!", 1), nil},
		{"short proof", strings.Replace(cf, proof, "AAAA", 1), nil},
		{"bad channel binding base64", strings.Replace(cf, "c=biws", "c=@@", 1), nil},
		{"channel binding of y", strings.Replace(cf, "c=biws", "c=eSws", 1), nil},
		{"missing proof", cf[:strings.LastIndex(cf, ",p=")], nil},
		{"missing channel binding", strings.TrimPrefix(cf, "c=biws,"), nil},
		{"attributes out of order", "r=" + nonce + ",c=biws,p=" + proof, nil},
		{"garbage after proof", cf + ",x", nil},
		{"empty", "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Same exchange state for every case: rebuild a started server
			// with the same client-first and nonce.
			s := *srv
			_, err := s.Finish([]byte(tc.msg))
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("Finish error %v, want %v", err, tc.want)
				}
				return
			}
			var pe *ProtocolError
			if !errors.As(err, &pe) {
				t.Fatalf("Finish error %v, want *ProtocolError", err)
			}
			if strings.Contains(pe.Msg, proof) || strings.Contains(pe.Msg, nonce) {
				t.Fatalf("ProtocolError echoes client input: %q", pe.Msg)
			}
		})
	}
	// The genuine message still works on a pristine copy.
	if _, err := srv.Finish(cfBytes); err != nil {
		t.Fatalf("genuine client-final rejected: %v", err)
	}
	// And the exchange cannot be replayed.
	if _, err := srv.Finish(cfBytes); err == nil {
		t.Fatal("Finish succeeded twice")
	}
}

func TestSCRAMServerChannelBindingWithSelfSignedCert(t *testing.T) {
	cert := selfSignedCert(t)
	cb := ChannelBindingHash(cert.Leaf)
	if want := sha256.Sum256(cert.Leaf.Raw); string(cb) != string(want[:]) {
		t.Fatal("ECDSA-SHA256 certificate must hash with SHA-256")
	}
	srv, err := NewSCRAMServer("u", mustCred(t, "u", "pw"), cb)
	if err != nil {
		t.Fatal(err)
	}
	if got := srv.Mechanisms(); len(got) != 2 || got[0] != MechanismSCRAMSHA256Plus || got[1] != MechanismSCRAMSHA256 {
		t.Fatalf("Mechanisms() = %v", got)
	}
	// Drive the client side by hand: SCRAMClient does not bind.
	const clientNonce = "fyko+d2lbbFgONRv9qkxdawL"
	gs2 := "p=tls-server-end-point,,"
	bare := "n=,r=" + clientNonce
	sf, err := srv.Start(MechanismSCRAMSHA256Plus, []byte(gs2+bare))
	if err != nil {
		t.Fatal(err)
	}
	nonce, rest, _ := strings.Cut(strings.TrimPrefix(string(sf), "r="), ",s=")
	saltB64, iterStr, _ := strings.Cut(rest, ",i=")
	salt, _ := base64.StdEncoding.DecodeString(saltB64)
	var iter int
	fmt.Sscan(iterStr, &iter)
	keys, err := deriveSCRAMKeys("pw", salt, iter)
	if err != nil {
		t.Fatal(err)
	}
	finalFor := func(cbData []byte) []byte {
		without := "c=" + base64.StdEncoding.EncodeToString(append([]byte(gs2), cbData...)) + ",r=" + nonce
		authMessage := bare + "," + string(sf) + "," + without
		stored := sha256.Sum256(keys.clientKey[:])
		proof := hmacSHA256(stored[:], authMessage)
		for i := range proof {
			proof[i] ^= keys.clientKey[i]
		}
		return []byte(without + ",p=" + base64.StdEncoding.EncodeToString(proof))
	}
	// A man in the middle terminates TLS with a different certificate.
	wrong := *srv
	var pe *ProtocolError
	if _, err := wrong.Finish(finalFor(ChannelBindingHash(selfSignedCert(t).Leaf))); !errors.As(err, &pe) {
		t.Fatalf("foreign certificate binding: err = %v, want *ProtocolError", err)
	}
	final, err := srv.Finish(finalFor(cb))
	if err != nil {
		t.Fatalf("bound exchange failed: %v", err)
	}
	if !strings.HasPrefix(string(final), "v=") {
		t.Fatalf("server-final %q", final)
	}
}

// RFC 7677 section 3 test vector: user "user", password "pencil".
const (
	rfcClientNonce = "rOprNGfwEbeRWgbNEkqO"
	rfcServerFirst = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
	rfcClientFinal = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
	rfcServerFinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
)

func TestSCRAMMatchesRFC7677TestVector(t *testing.T) {
	cl := NewSCRAMClient("pencil")
	cl.clientNonce = rfcClientNonce
	cl.clientFirstBare = "n=user,r=" + rfcClientNonce
	if got := string(cl.ClientFirst()); got != "n,,n=user,r="+rfcClientNonce {
		t.Fatalf("client-first %q", got)
	}
	cf, err := cl.ClientFinal([]byte(rfcServerFirst))
	if err != nil {
		t.Fatal(err)
	}
	if string(cf) != rfcClientFinal {
		t.Fatalf("client-final\n got %s\nwant %s", cf, rfcClientFinal)
	}
	if err := cl.VerifyServerFinal([]byte(rfcServerFinal)); err != nil {
		t.Fatal(err)
	}

	// The server side, with the verifier SCRAMVerifier builds from the
	// vector's salt: the same exchange must be accepted and answered with
	// the vector's server-final.
	salt, _ := base64.StdEncoding.DecodeString("W22ZaJ0SNY7soEsUEjb6gQ==")
	verifier := SCRAMVerifier("pencil", salt, 4096)
	srv, err := NewSCRAMServer("user", mustCred(t, "user", verifier), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Start(MechanismSCRAMSHA256, []byte("n,,n=user,r="+rfcClientNonce)); err != nil {
		t.Fatal(err)
	}
	pinServerFirst(srv, rfcServerFirst) // the random server nonce, pinned to the vector's
	final, err := srv.Finish([]byte(rfcClientFinal))
	if err != nil {
		t.Fatal(err)
	}
	if string(final) != rfcServerFinal {
		t.Fatalf("server-final %s, want %s", final, rfcServerFinal)
	}
}

func TestSCRAMClientRejectsMalformedServerFirst(t *testing.T) {
	for _, tc := range []struct{ name, msg string }{
		{"foreign nonce", "r=zzz,s=c2FsdA==,i=4096"},
		{"nonce not extended", "r=%s,s=c2FsdA==,i=4096"},
		{"bad salt", "r=%sX,s=!!,i=4096"},
		{"empty salt", "r=%sX,s=,i=4096"},
		{"zero iterations", "r=%sX,s=c2FsdA==,i=0"},
		{"negative iterations", "r=%sX,s=c2FsdA==,i=-1"},
		{"huge iterations", "r=%sX,s=c2FsdA==,i=99999999999"},
		{"missing iterations", "r=%sX,s=c2FsdA=="},
		{"mandatory extension", "m=x,r=%sX,s=c2FsdA==,i=1"},
		{"empty", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := NewSCRAMClient("pw")
			cl.ClientFirst()
			msg := tc.msg
			if strings.Contains(msg, "%s") {
				msg = fmt.Sprintf(msg, cl.clientNonce)
			}
			if _, err := cl.ClientFinal([]byte(msg)); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestPlainCredentialDerivesSCRAMVerifierOnceUnderConcurrentLogins(t *testing.T) {
	cred := mustCred(t, "storm", "storm password")
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for range 100 {
		wg.Go(func() {
			srv, err := NewSCRAMServer("storm", cred, nil)
			if err != nil {
				errs <- err
				return
			}
			cl := NewSCRAMClient("storm password")
			sf, err := srv.Start(cl.Mechanism(), cl.ClientFirst())
			if err == nil {
				var cf []byte
				if cf, err = cl.ClientFinal(sf); err == nil {
					var final []byte
					if final, err = srv.Finish(cf); err == nil {
						err = cl.VerifyServerFinal(final)
					}
				}
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := cred.st.derivations.Load(); n != 1 {
		t.Fatalf("PBKDF2 ran %d times for one credential, want 1", n)
	}
	// A copy of the credential shares the derivation.
	copied := cred
	if _, err := NewSCRAMServer("storm", copied, nil); err != nil || cred.st.derivations.Load() != 1 {
		t.Fatalf("copy re-derived: %v, %d", err, cred.st.derivations.Load())
	}
}

func TestSCRAMClientKeyCacheDerivesOncePerPasswordSaltAndIterations(t *testing.T) {
	kc := newKeyCache(2)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := kc.get("pw", []byte("salt"), 4096); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := kc.derivations.Load(); n != 1 {
		t.Fatalf("20 concurrent gets derived %d times, want 1", n)
	}
	a, _ := kc.get("pw", []byte("salt"), 4096)
	b, _ := kc.get("pw", []byte("salt"), 4097)
	c, _ := kc.get("other", []byte("salt"), 4096)
	if a == b || a == c {
		t.Fatal("distinct inputs share keys")
	}
	if kc.lru.Len() != 2 || len(kc.entries) != 2 {
		t.Fatalf("cache holds %d/%d entries, want bound 2", kc.lru.Len(), len(kc.entries))
	}
	for k := range kc.entries {
		if strings.Contains(fmt.Sprintf("%v", k), "pw") {
			t.Fatal("cache key holds the password in clear text")
		}
	}
	before := kc.derivations.Load()
	kc.get("pw", []byte("salt"), 4096) // evicted as least recently used
	if kc.derivations.Load() != before+1 {
		t.Fatal("evicted entry not re-derived")
	}
}

func TestChannelBindingHashFollowsRFC5929(t *testing.T) {
	cert := selfSignedCert(t).Leaf
	c := *cert
	c.SignatureAlgorithm = 0 // unknown
	if ChannelBindingHash(&c) != nil {
		t.Error("unknown algorithm must yield nil")
	}
	c.SignatureAlgorithm = x509.SHA1WithRSA
	if h := ChannelBindingHash(&c); len(h) != sha256.Size {
		t.Errorf("SHA-1 certificate: %d-byte hash, want SHA-256", len(h))
	}
	c.SignatureAlgorithm = x509.ECDSAWithSHA384
	if h := ChannelBindingHash(&c); len(h) != 48 {
		t.Errorf("SHA-384 certificate: %d-byte hash", len(h))
	}
}

// TestKeyedMACEqualsHMACForEveryKeyAndMessage checks the MACs a verifier
// makes once (pads hashed ahead) against crypto/hmac: keys of the verifier
// length and shorter, messages of every length across block boundaries,
// one hash state reused for all of them, as an exchange reuses its own.
func TestKeyedMACEqualsHMACForEveryKeyAndMessage(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	h := sha256.New() // one state for every MAC, as an exchange reuses it
	for _, keyLen := range []int{0, 1, 31, 32, 63, 64} {
		key := make([]byte, keyLen)
		for i := range key {
			key[i] = byte(rng.Uint32())
		}
		k := newKeyedMAC(key)
		for msgLen := 0; msgLen <= 300; msgLen += 7 {
			msg := make([]byte, msgLen)
			for i := range msg {
				msg[i] = byte(rng.Uint32())
			}
			want := hmac.New(sha256.New, key)
			want.Write(msg)
			var got [sha256.Size]byte
			k.sum(h, &got, msg)
			if !bytes.Equal(got[:], want.Sum(nil)) {
				t.Fatalf("key of %d bytes, message of %d: keyed MAC %x, crypto/hmac %x", keyLen, msgLen, got, want.Sum(nil))
			}
		}
	}
}

// TestVerifiersCarryTheirMACs checks that both ways a verifier is made, from
// a stored secret and from a password, key its MACs with its own keys.
func TestVerifiersCarryTheirMACs(t *testing.T) {
	parsed, err := parseSCRAMSecret(SCRAMVerifier("pencil", []byte("0123456789abcdef"), 4096))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := deriveSCRAMKeys("pencil", []byte("0123456789abcdef"), 4096)
	if err != nil {
		t.Fatal(err)
	}
	derived := keys.secret([]byte("0123456789abcdef"), 4096)
	for name, sec := range map[string]scramSecret{"parsed": parsed, "derived": derived} {
		if sec.macs == nil {
			t.Fatalf("%s verifier has no MACs", name)
		}
		var got [sha256.Size]byte
		sec.proofMAC(sha256.New(), &got, []byte("m"))
		if want := hmacSHA256(sec.storedKey[:], "m"); !bytes.Equal(got[:], want) {
			t.Errorf("%s verifier: proof MAC %x, want %x", name, got, want)
		}
		sec.signatureMAC(sha256.New(), &got, []byte("m"))
		if want := hmacSHA256(sec.serverKey[:], "m"); !bytes.Equal(got[:], want) {
			t.Errorf("%s verifier: signature MAC %x, want %x", name, got, want)
		}
	}
}

// TestWrongProofsAllocateAlikeForRealAndUnknownUsers checks that a client
// cannot tell an existing user from an unknown one by the work a wrong proof
// costs: both exchanges check it with MACs keyed ahead, with the same
// allocations (a timing test would assert a wall time; allocations are what
// set the two paths apart when one keyed its MACs per login). It skips
// itself under -race; .ci/run runs it without.
func TestWrongProofsAllocateAlikeForRealAndUnknownUsers(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race; .ci/run runs this test without it")
	}
	cred, err := ParseCredential("alice", SCRAMVerifier("pencil", []byte("0123456789abcdef"), 4096))
	if err != nil {
		t.Fatal(err)
	}
	const runs = 20
	finishAllocs := func(newServer func() *SCRAMServer) float64 {
		servers := make([]*SCRAMServer, runs+1)
		finals := make([][]byte, runs+1)
		for i := range servers {
			servers[i] = newServer()
			cl := NewSCRAMClient("not the password")
			sf, err := servers[i].Start(cl.Mechanism(), cl.ClientFirst())
			if err != nil {
				t.Fatal(err)
			}
			if finals[i], err = cl.ClientFinal(sf); err != nil {
				t.Fatal(err)
			}
		}
		i := 0
		return testing.AllocsPerRun(runs, func() {
			if _, err := servers[i].Finish(finals[i]); !errors.Is(err, ErrPasswordMismatch) {
				t.Fatalf("Finish with a wrong proof: %v, want ErrPasswordMismatch", err)
			}
			i++
		})
	}
	real := finishAllocs(func() *SCRAMServer {
		s, err := NewSCRAMServer("alice", cred, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
	unknown := finishAllocs(func() *SCRAMServer { return NewSCRAMServerForUnknownUser("mallory", nil) })
	if real != unknown {
		t.Errorf("a wrong proof costs %v allocations for a real user and %v for an unknown one", real, unknown)
	}
}

// pinServerFirst replaces the server-first-message a started exchange sent
// (and so its random nonce) with first.
func pinServerFirst(srv *SCRAMServer, first string) {
	bare := srv.auth[:srv.firstOff]
	srv.auth = append(append(append(make([]byte, 0, len(bare)+len(first)+256), bare...), first...), ',')
	srv.firstEnd = len(srv.auth) - 1
	srv.nonceEnd = strings.Index(first, ",s=")
}

func TestAnExchangeAllocatesOnlyItsOwnCopyAndBuffer(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race; .ci/run runs this test without it")
	}
	salt, _ := base64.StdEncoding.DecodeString("W22ZaJ0SNY7soEsUEjb6gQ==")
	cred := mustCred(t, "user", SCRAMVerifier("pencil", salt, 4096))
	const runs = 20
	servers := make([]*SCRAMServer, runs+1) // AllocsPerRun runs once more to warm up
	for i := range servers {
		var err error
		if servers[i], err = NewSCRAMServer("user", cred, nil); err != nil {
			t.Fatal(err)
		}
	}
	first := []byte("n,,n=user,r=" + rfcClientNonce)
	i := 0
	start := testing.AllocsPerRun(runs, func() {
		if _, err := servers[i].Start(MechanismSCRAMSHA256, first); err != nil {
			t.Fatal(err)
		}
		i++
	})
	for _, srv := range servers {
		pinServerFirst(srv, rfcServerFirst)
	}
	final := []byte(rfcClientFinal)
	i = 0
	finish := testing.AllocsPerRun(runs, func() {
		if _, err := servers[i].Finish(final); err != nil {
			t.Fatal(err)
		}
		i++
	})
	// Start: its copy of the client-first-message and the exchange's
	// buffer. Finish: one SHA-256 state for both MACs.
	if start > 2 || finish > 1 {
		t.Errorf("a successful exchange allocated %v times in Start and %v in Finish, want at most 2 and 1", start, finish)
	}
}

func TestMechanismsAreListedAsAuthenticationSASLWantsThem(t *testing.T) {
	cred := mustCred(t, "u", SCRAMVerifier("pw", []byte("saltsaltsaltsalt"), 4096))
	for _, binding := range [][]byte{nil, []byte("cb")} {
		srv, err := NewSCRAMServer("u", cred, binding)
		if err != nil {
			t.Fatal(err)
		}
		var want []byte
		for _, m := range srv.Mechanisms() {
			want = append(append(want, m...), 0)
		}
		want = append(want, 0)
		if got := srv.AppendMechanisms([]byte("x")); string(got) != "x"+string(want) {
			t.Errorf("binding %q: mechanisms %q, want %q", binding, got, "x"+string(want))
		}
	}
}

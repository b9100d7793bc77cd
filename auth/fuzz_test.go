package auth

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzParseUserlist checks that no input panics ParseUserlist and that every
// parsed user survives re-quoting and re-parsing.
func FuzzParseUserlist(f *testing.F) {
	f.Add([]byte(`"alice" "secret"` + "\n"))
	f.Add([]byte("; comment\n# comment\n\"a\"\"b\" \"c\"\"d\" trailing\n"))
	f.Add([]byte(`"u" "md5` + strings.Repeat("0", 32) + `"`))
	f.Add([]byte(`"u" "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA"`))
	f.Fuzz(func(t *testing.T, data []byte) {
		creds, err := ParseUserlist(bytes.NewReader(data))
		if err != nil {
			return
		}
		var b strings.Builder
		for u := range creds {
			b.WriteString(`"` + strings.ReplaceAll(u, `"`, `""`) + `" "x"` + "\n")
		}
		again, err := ParseUserlist(strings.NewReader(b.String()))
		if err != nil {
			// A user name containing a newline cannot be re-quoted on one
			// line; the parser never produces one.
			t.Fatalf("re-parse of parsed users failed: %v", err)
		}
		if len(again) != len(creds) {
			t.Fatalf("re-parse found %d users, want %d", len(again), len(creds))
		}
	})
}

// FuzzSCRAMServer feeds arbitrary client-first and client-final messages to
// a SCRAMServer with and without channel binding; it must never panic, and
// must never accept a client-final that was not built from the password.
func FuzzSCRAMServer(f *testing.F) {
	cred, err := ParseCredential("u", SCRAMVerifier("pw", []byte("saltsaltsaltsalt"), 1))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(false, "SCRAM-SHA-256", []byte("n,,n=,r=abc"), []byte("c=biws,r=abc,p=AAAA"))
	f.Add(true, "SCRAM-SHA-256-PLUS", []byte("p=tls-server-end-point,,n=,r=abc"), []byte("c=cD10bHMtc2VydmVyLWVuZC1wb2ludCwsY2I=,r=abc,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="))
	f.Add(true, "SCRAM-SHA-256", []byte("y,,n=,r=abc"), []byte(""))
	f.Add(false, "SCRAM-SHA-256", []byte("n,a=x,n=u,r=a,e=1"), []byte("c=biws,r=a,x=1,p=="))
	f.Fuzz(func(t *testing.T, binding bool, mechanism string, first, final []byte) {
		var cb []byte
		if binding {
			cb = []byte("cb")
		}
		srv, err := NewSCRAMServer("u", cred, cb)
		if err != nil {
			t.Fatal(err)
		}
		sf, err := srv.Start(mechanism, first)
		if err != nil {
			return
		}
		// Splice the server's nonce in so the fuzzer can reach proof checks.
		nonce, _, _ := strings.Cut(strings.TrimPrefix(string(sf), "r="), ",")
		final = bytes.ReplaceAll(final, []byte("r=abc"), []byte("r="+nonce))
		if _, err := srv.Finish(final); err == nil {
			t.Fatalf("forged client-final accepted: %q", final)
		}
		NewSCRAMServerForUnknownUser("u", cb).Start(mechanism, first)
	})
}

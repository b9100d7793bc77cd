package auth

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseCredentialDetectsKindLikePostgreSQL(t *testing.T) {
	verifier := SCRAMVerifier("pw", []byte("saltsaltsaltsalt"), 4096)
	md5 := "md5" + md5Hex("pw", "bob")
	tests := []struct {
		name, stored     string
		kind             CredentialKind
		canSCRAM, canMD5 bool
		wantErr          bool
	}{
		{"plain", "pw", KindPlain, true, true, false},
		{"md5", md5, KindMD5, false, true, false},
		{"uppercase md5 hex is plain (PostgreSQL MD5_PASSWD_CHARSET)", strings.ToUpper(md5[:3]) + md5[3:], KindPlain, true, true, false},
		{"md5 too short is plain", md5[:34], KindPlain, true, true, false},
		{"scram", verifier, KindSCRAM, true, false, false},
		{"empty never matches", "", KindPlain, false, false, false},
		{"damaged scram", "SCRAM-SHA-256$4096:c2FsdA==$broken", 0, false, false, true},
		{"scram zero iterations", "SCRAM-SHA-256$0:c2FsdA==$" + strings.Repeat("A", 43) + "=:" + strings.Repeat("A", 43) + "=", 0, false, false, true},
		{"scram short key", "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA", 0, false, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseCredential("bob", tc.stored)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error: %t", err, tc.wantErr)
			}
			if err != nil {
				if strings.Contains(err.Error(), tc.stored) || !strings.Contains(err.Error(), `"bob"`) {
					t.Fatalf("error %q must name the user and not echo the secret", err)
				}
				return
			}
			if c.Kind() != tc.kind || c.CanSCRAM() != tc.canSCRAM || c.CanMD5() != tc.canMD5 {
				t.Fatalf("kind %v CanSCRAM %t CanMD5 %t", c.Kind(), c.CanSCRAM(), c.CanMD5())
			}
		})
	}
	if got := SCRAMVerifier("pw", []byte("saltsaltsaltsalt"), 4096); mustCred(t, "x", got).st.scram.String() != got {
		t.Fatal("verifier does not round-trip")
	}
}

func TestVerifyMD5AndVerifyPlainAcceptOnlyTheRightPassword(t *testing.T) {
	salt := [4]byte{1, 2, 3, 4}
	creds := map[string]Credential{
		"plain": mustCred(t, "bob", "hunter2"),
		"md5":   mustCred(t, "bob", "md5"+md5Hex("hunter2", "bob")),
		"scram": mustCred(t, "bob", SCRAMVerifier("hunter2", []byte("saltsaltsaltsalt"), 4096)),
	}
	for name, c := range creds {
		wantMD5 := name != "scram"
		if got := VerifyMD5("bob", c, salt, MD5Response("bob", "hunter2", salt)); got != wantMD5 {
			t.Errorf("%s: VerifyMD5(right) = %t, want %t", name, got, wantMD5)
		}
		if VerifyMD5("bob", c, salt, MD5Response("bob", "hunter3", salt)) {
			t.Errorf("%s: VerifyMD5 accepted a wrong password", name)
		}
		if VerifyMD5("bob", c, [4]byte{9, 9, 9, 9}, MD5Response("bob", "hunter2", salt)) {
			t.Errorf("%s: VerifyMD5 accepted a response for another salt", name)
		}
		if !VerifyPlain(c, "hunter2") {
			t.Errorf("%s: VerifyPlain rejected the right password", name)
		}
		for _, wrong := range []string{"hunter3", "hunter", "hunter22", ""} {
			if VerifyPlain(c, wrong) {
				t.Errorf("%s: VerifyPlain accepted %q", name, wrong)
			}
		}
	}
	empty := mustCred(t, "bob", "")
	if VerifyPlain(empty, "") || VerifyMD5("bob", empty, salt, MD5Response("bob", "", salt)) {
		t.Error("an empty password must never authenticate")
	}
	if VerifyPlain(Credential{}, "x") || VerifyMD5("bob", Credential{}, salt, "md5") {
		t.Error("the zero Credential must never authenticate")
	}
	// Known answer: libpq's pg_md5_encrypt("md5" + md5(pw+user) + salt).
	if got := MD5Response("postgres", "postgres", [4]byte{0x01, 0x02, 0x03, 0x04}); len(got) != 35 || !strings.HasPrefix(got, "md5") {
		t.Fatalf("MD5Response format %q", got)
	}
}

func TestSecretsNeverAppearInFormattedValues(t *testing.T) {
	const password = "Sup3rS3cret!"
	verifier := SCRAMVerifier(password, []byte("saltsaltsaltsalt"), 4096)
	_, keys, _ := strings.Cut(verifier, "$4096:")
	_, keys, _ = strings.Cut(keys, "$")
	storedKey, serverKey, _ := strings.Cut(keys, ":")

	plain := mustCred(t, "u", password)
	scram := mustCred(t, "u", verifier)
	md5 := mustCred(t, "u", "md5"+md5Hex(password, "u"))
	srv, err := NewSCRAMServer("u", plain, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv2, _ := NewSCRAMServer("u", scram, []byte("cb"))
	cl := NewSCRAMClient(password)
	sf, _ := srv2.Start(cl.Mechanism(), cl.ClientFirst())
	cl.ClientFinal(sf)

	values := []any{plain, &plain, scram, md5, srv, *srv, srv2, cl, *cl,
		map[string]Credential{"u": plain}, []Credential{scram}, NewStore(map[string]Credential{"u": plain})}
	forbidden := []string{password, md5Hex(password, "u"), storedKey, serverKey}
	for _, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
			out := fmt.Sprintf(verb, v)
			for _, secret := range forbidden {
				if strings.Contains(out, secret) || strings.Contains(out, fmt.Sprintf("%x", secret)) {
					t.Errorf("%s of %T leaks a secret: %s", verb, v, out)
				}
			}
		}
	}
}

func TestStoreLookupAndReplace(t *testing.T) {
	s := NewStore(map[string]Credential{"a": mustCred(t, "a", "1")})
	if _, ok := s.Lookup("a"); !ok {
		t.Fatal("a missing")
	}
	if _, ok := s.Lookup("b"); ok {
		t.Fatal("b present")
	}
	s.Replace(map[string]Credential{"b": mustCred(t, "b", "2")})
	if _, ok := s.Lookup("a"); ok || s.Len() != 1 {
		t.Fatal("Replace kept old users")
	}
	if NewStore(nil).Len() != 0 {
		t.Fatal("nil map")
	}
}

func TestParseUserlist(t *testing.T) {
	md5 := "md5" + md5Hex("pw", "bob")
	verifier := SCRAMVerifier("pw", []byte("saltsaltsaltsalt"), 4096)
	tests := []struct {
		name    string
		in      string
		want    map[string]CredentialKind
		wantErr string // substring of the error
	}{
		{"empty file", "", map[string]CredentialKind{}, ""},
		{"comments and blanks", "; pgbouncer comment\n# hash comment\n\n   \n\t; indented\n", map[string]CredentialKind{}, ""},
		{"three kinds", `"alice" "plain"` + "\n" + `"bob" "` + md5 + `"` + "\n" + `"carol" "` + verifier + `"` + "\n",
			map[string]CredentialKind{"alice": KindPlain, "bob": KindMD5, "carol": KindSCRAM}, ""},
		{"trailing fields ignored", `"alice" "pw" "ignored" more stuff`, map[string]CredentialKind{"alice": KindPlain}, ""},
		{"escaped quotes", `"al""ice" "p""w"`, map[string]CredentialKind{`al"ice`: KindPlain}, ""},
		{"CRLF and tabs", "\"alice\"\t\"pw\"\r\n", map[string]CredentialKind{"alice": KindPlain}, ""},
		{"last entry wins", "\"a\" \"1\"\n\"a\" \"" + md5 + "\"", map[string]CredentialKind{"a": KindMD5}, ""},
		{"unquoted user", "alice \"pw\"", nil, "line 1"},
		{"unterminated user", "\"alice \"pw\"\n", nil, "line 1"},
		{"missing secret", "\n\"alice\"\n", nil, "line 2"},
		{"unterminated secret", "\"a\" \"1\"\n\"alice\" \"topsecret", nil, "line 2"},
		{"no space between fields", `"alice""pw"`, nil, "line 1"},
		{"empty user", `"" "pw"`, nil, "line 1"},
		{"damaged verifier", `"alice" "SCRAM-SHA-256$topsecret"`, nil, "line 1"},
		{"line too long", `"a" "` + strings.Repeat("x", maxUserlistLine) + `"`, nil, "line 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseUserlist(strings.NewReader(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "topsecret") || strings.Contains(err.Error(), "pw") {
					t.Fatalf("error echoes a secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d users, want %d", len(got), len(tc.want))
			}
			for u, k := range tc.want {
				if got[u].Kind() != k {
					t.Errorf("user %q: kind %v, want %v", u, got[u].Kind(), k)
				}
			}
		})
	}
	got, _ := ParseUserlist(strings.NewReader(`"al""ice" "p""w"`))
	if !VerifyPlain(got[`al"ice`], `p"w`) {
		t.Fatal(`"" must unescape to a quote in the secret`)
	}
}

func TestLoadUserlistReadsFileAndNamesItInErrors(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "userlist.txt")
	if err := os.WriteFile(good, []byte(`"alice" "pw"`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	creds, err := LoadUserlist(good)
	if err != nil || !VerifyPlain(creds["alice"], "pw") {
		t.Fatalf("LoadUserlist: %v", err)
	}
	bad := filepath.Join(dir, "bad.txt")
	os.WriteFile(bad, []byte("oops\n"), 0o600)
	if _, err := LoadUserlist(bad); err == nil || !strings.Contains(err.Error(), "bad.txt") {
		t.Fatalf("err = %v", err)
	}
	if _, err := LoadUserlist(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v, want ErrNotExist", err)
	}
}

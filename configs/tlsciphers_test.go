package configs

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// names returns the OpenSSL names of ids, in cipherSuites' order.
func cipherNames(ids []uint16) []string {
	var out []string
	for _, c := range cipherSuites {
		if slices.Contains(ids, c.id) {
			out = append(out, c.name)
		}
	}
	return out
}

func TestTLSCipherSuitesReadsOpenSSLCipherLists(t *testing.T) {
	tests := []struct {
		value string
		want  []string // nil with err "": Go's defaults
		err   string
	}{
		{value: "default"},
		{value: ""},
		{value: "Secure"},
		{value: "fast"},
		{value: "ECDHE-RSA-AES256-GCM-SHA384", want: []string{"ECDHE-RSA-AES256-GCM-SHA384"}},
		{value: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", want: []string{"ECDHE-ECDSA-AES128-GCM-SHA256"}},
		{value: "ECDHE+AESGCM:!aRSA", want: []string{"ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-GCM-SHA256"}},
		{value: "ECDHE+CHACHA20, AES128-SHA", want: []string{"ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305", "AES128-SHA"}},
		{value: "HIGH:!kRSA:!SHA1:!SHA256:@STRENGTH", want: []string{"ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305", "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256"}},
		{value: "TLSv1.2+AEAD+ECDHE:TLSv1.2+AEAD+DHE", want: []string{"ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305", "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256"}},
		{value: "CAMELLIA:nonsense:AES256-SHA", want: []string{"AES256-SHA"}},
		{value: "nonsense", err: "names no TLS 1.2 cipher suite"},
		{value: "DHE-RSA-AES256-GCM-SHA384", err: "names no TLS 1.2 cipher suite"},
		{value: "TLS_AES_128_GCM_SHA256", err: "TLS 1.3's suites cannot be chosen"},
		{value: "HIGH:!ALL", err: "names no"},
	}
	for _, tc := range tests {
		t.Run(tc.value, func(t *testing.T) {
			ids, err := TLSCipherSuites(tc.value)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("TLSCipherSuites(%q) = %v, %v; want an error with %q", tc.value, cipherNames(ids), err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == nil {
				if ids != nil {
					t.Fatalf("TLSCipherSuites(%q) = %v, want nil (Go's defaults)", tc.value, cipherNames(ids))
				}
				return
			}
			if got := cipherNames(ids); !slices.Equal(got, tc.want) {
				t.Fatalf("TLSCipherSuites(%q) = %v, want %v", tc.value, got, tc.want)
			}
		})
	}
}

// The suites a list selects are those OpenSSL selects among the ones Go
// has too, when an openssl binary is at hand to ask.
func TestTLSCipherSuitesSelectWhatOpenSSLSelects(t *testing.T) {
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("no openssl binary")
	}
	for _, value := range []string{
		"ALL", "HIGH", "HIGH:!aNULL", "RSA", "kRSA", "aRSA", "ECDSA", "ECDH", "EECDH", "kEECDH",
		"SHA", "SHA1", "SHA256", "AES", "AES128", "AES256", "AESGCM", "CHACHA20", "TLSv1", "TLSv1.0", "SSLv3", "TLSv1.2",
		"ALL:!RSA", "HIGH:-AES128:AES128-SHA", "HIGH:!AES128:AES128-SHA", "ECDHE+AES256", "AES+kRSA",
		"ECDHE+CHACHA20:ECDHE-RSA-AES128-SHA", "ECDH+SHA256", "TLSv1.2:!kRSA:@STRENGTH", "HIGH:+SHA1:!ECDSA",
	} {
		out, err := exec.Command(bin, "ciphers", value).Output()
		if err != nil {
			t.Fatalf("openssl ciphers %q: %v", value, err)
		}
		var want []string
		for _, n := range strings.Split(strings.TrimSpace(string(out)), ":") {
			for _, c := range cipherSuites {
				if n == c.name {
					want = append(want, n)
				}
			}
		}
		ids, err := TLSCipherSuites(value)
		if err != nil {
			t.Fatalf("TLSCipherSuites(%q): %v", value, err)
		}
		got := cipherNames(ids)
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("TLSCipherSuites(%q) = %v, openssl ciphers: %v", value, got, want)
		}
	}
}

// A pgbouncer.ini's client_tls_ciphers and server_tls_ciphers are honoured,
// not ignored with a warning; a list that names nothing pgferry knows is
// refused, naming its key, as PgBouncer refuses it ("invalid
// client_tls_ciphers").
func TestINIKeepsTheTLSCiphersAndRefusesOnesThatNameNothing(t *testing.T) {
	doc := "[pgbouncer]\nauth_type = trust\nclient_tls_ciphers = HIGH:!aNULL\nserver_tls_ciphers = ECDHE-RSA-AES256-GCM-SHA384\n" + iniDB
	c, warnings, err := Parse([]byte(doc), "ini", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range warnings {
		if strings.Contains(w, "tls_ciphers") {
			t.Errorf("warning %q: the key must be honoured", w)
		}
	}
	if c.ClientTLSCiphers != "HIGH:!aNULL" || c.ServerTLSCiphers != "ECDHE-RSA-AES256-GCM-SHA384" {
		t.Errorf("client_tls_ciphers %q, server_tls_ciphers %q; want them as written", c.ClientTLSCiphers, c.ServerTLSCiphers)
	}
	for _, key := range []string{"client_tls_ciphers", "server_tls_ciphers"} {
		_, _, err = Parse([]byte("[pgbouncer]\nauth_type = trust\n"+key+" = nonsense\n"+iniDB), "ini", nil)
		if err == nil || !strings.Contains(err.Error(), key+": ") {
			t.Fatalf("got %v, want an error naming %s", err, key)
		}
	}
	if c := Default(); c.ClientTLSCiphers != "default" || c.ServerTLSCiphers != "default" {
		t.Errorf("defaults %q and %q, want default (PgBouncer's)", c.ClientTLSCiphers, c.ServerTLSCiphers)
	}
}

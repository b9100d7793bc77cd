package hba

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// matrixFile exercises every field form the matcher distinguishes.
const matrixFile = `# pgferry hba test file
local   all          all                       trust
hostssl all          certuser  127.0.0.1/32    cert
host    all          blocked   all             reject
host    app,"Other DB" app     127.0.0.1/32    scram-sha-256
host    app          app       127.0.0.2 255.255.255.255 md5
hostnossl sameuser   all       127.0.0.0/8     password
host    all          all       ::1/128         md5
host    replication  all       all             trust
`

func mustParse(t *testing.T, text string) *Rules {
	t.Helper()
	r, err := Parse(strings.NewReader(text), "/etc/pgferry/hba.conf", func(string) ([]byte, error) {
		return nil, os.ErrNotExist
	})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return r
}

func TestMatchPicksTheFirstRuleThatAppliesOrNone(t *testing.T) {
	rules := mustParse(t, matrixFile)
	v4 := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	tests := []struct {
		name     string
		conn     Conn
		want     Method
		wantLine int // 0: no rule
	}{
		{"unix socket uses the local line", Conn{Local: true, Database: "x", User: "y"}, MethodTrust, 2},
		{"cert user over TLS", Conn{TLS: true, Addr: v4("127.0.0.1"), Database: "app", User: "certuser"}, MethodCert, 3},
		{"cert user without TLS falls through to the database-named-as-user line", Conn{Addr: v4("127.0.0.1"), Database: "certuser", User: "certuser"}, MethodPassword, 7},
		{"rejected user from anywhere", Conn{Addr: v4("10.1.2.3"), Database: "app", User: "blocked"}, MethodReject, 4},
		{"app from 127.0.0.1 gets scram", Conn{Addr: v4("127.0.0.1"), Database: "app", User: "app"}, MethodSCRAM, 5},
		{"quoted database name with a space", Conn{Addr: v4("127.0.0.1"), Database: "Other DB", User: "app"}, MethodSCRAM, 5},
		{"app from 127.0.0.2 gets md5 through the netmask form", Conn{Addr: v4("127.0.0.2"), Database: "app", User: "app"}, MethodMD5, 6},
		{"IPv4-mapped IPv6 client matches IPv4 rules", Conn{Addr: v4("::ffff:127.0.0.2"), Database: "app", User: "app"}, MethodMD5, 6},
		{"sameuser over plain TCP", Conn{Addr: v4("127.0.0.3"), Database: "bob", User: "bob"}, MethodPassword, 7},
		{"sameuser does not apply over TLS", Conn{TLS: true, Addr: v4("127.0.0.3"), Database: "bob", User: "bob"}, "", 0},
		{"IPv6 loopback", Conn{Addr: v4("::1"), Database: "db", User: "u"}, MethodMD5, 8},
		{"replication line matches no ordinary database", Conn{Addr: v4("10.0.0.1"), Database: "replication", User: "u"}, "", 0},
		{"unknown address has no rule", Conn{Addr: v4("192.168.1.1"), Database: "app", User: "app"}, "", 0},
		{"names are case sensitive", Conn{Addr: v4("127.0.0.1"), Database: "APP", User: "app"}, "", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ru, ok := rules.Match(tc.conn)
			if tc.wantLine == 0 {
				if ok {
					t.Fatalf("matched line %d (%s), want no rule", ru.Line, ru.Method)
				}
				return
			}
			if !ok || ru.Line != tc.wantLine || ru.Method != tc.want {
				t.Fatalf("got line %d %q (ok %v), want line %d %q", ru.Line, ru.Method, ok, tc.wantLine, tc.want)
			}
		})
	}
}

func TestEmptyFileMatchesNothing(t *testing.T) {
	rules := mustParse(t, "# nothing\n\n   \n")
	if _, ok := rules.Match(Conn{Local: true, Database: "a", User: "b"}); ok {
		t.Fatal("an empty file matched")
	}
}

func TestParseRefusesWhatPgferryCannotHonourNamingTheLine(t *testing.T) {
	tests := []struct {
		name, line, want string
	}{
		{"group membership", "host all +admins 0.0.0.0/0 md5", "+group"},
		{"samerole", "host samerole all 0.0.0.0/0 md5", `"samerole" is not supported`},
		{"samegroup", "host samegroup all 0.0.0.0/0 md5", `"samegroup" is not supported`},
		{"keyword in user field", "host all sameuser 0.0.0.0/0 md5", "not allowed in the user field"},
		{"peer", "local all all peer", `"peer" is not supported by pgferry`},
		{"ldap", `host all all 0.0.0.0/0 ldap ldapserver=x`, `"ldap" is not supported by pgferry`},
		{"ident", "host all all 0.0.0.0/0 ident", `unsupported authentication method "ident"`},
		{"gss connection type", "hostgssenc all all 0.0.0.0/0 md5", `"hostgssenc" is not supported`},
		{"unknown type", "hots all all 0.0.0.0/0 md5", `unknown connection type "hots"`},
		{"host name", "host all all db.example.com md5", "host names are not supported"},
		{"samehost", "host all all samehost md5", `"samehost" is not supported`},
		{"bits outside mask", "host all all 10.1.2.3/8 md5", "did you mean 10.0.0.0/8"},
		{"mask too long", "host all all 10.0.0.0/33 md5", "invalid CIDR mask"},
		{"missing mask", "host all all 10.0.0.1 md5", "invalid netmask"},
		{"non-contiguous netmask", "host all all 10.0.0.0 255.0.255.0 md5", "not contiguous"},
		{"mixed family netmask", "host all all 10.0.0.0 ffff:: md5", "invalid netmask"},
		{"map option", "hostssl all all 0.0.0.0/0 cert map=certs", "map="},
		{"other option", "host all all 0.0.0.0/0 md5 clientcert=verify-full", "options are not supported"},
		{"missing method", "host all all 0.0.0.0/0", "missing authentication method"},
		{"missing user", "local all", "missing user field"},
		{"unterminated quote", `host "app all 0.0.0.0/0 md5`, "unterminated quoted name"},
		{"empty list item", "host a,,b all 0.0.0.0/0 md5", "empty name in a list"},
		{"missing include", "host @dbs.txt all 0.0.0.0/0 md5", "@dbs.txt"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader("# first\n"+tc.line+"\n"), "hba.conf", func(string) ([]byte, error) {
				return nil, os.ErrNotExist
			})
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("got %v, want a ParseError", err)
			}
			if pe.File != "hba.conf" || pe.Line != 2 || !strings.HasPrefix(err.Error(), "hba.conf:2: ") {
				t.Fatalf("error %q does not name hba.conf:2", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

func TestIncludeFilesAreReadRelativeToTheIncludingFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("users.txt", "# admins\nalice, bob\n\"carol x\"  @more.txt\n")
	write("more.txt", "dave\n")
	write("hba.conf", "host all @users.txt 10.0.0.0/8 scram-sha-256\nhost all all 10.0.0.0/8 reject\n")
	rules, err := Load(filepath.Join(dir, "hba.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"alice", "bob", "carol x", "dave"} {
		if ru, ok := rules.Match(Conn{Addr: netip.MustParseAddr("10.1.1.1"), Database: "d", User: u}); !ok || ru.Method != MethodSCRAM {
			t.Errorf("user %q: got %q, want scram-sha-256 from the include", u, ru.Method)
		}
	}
	if ru, _ := rules.Match(Conn{Addr: netip.MustParseAddr("10.1.1.1"), Database: "d", User: "eve"}); ru.Method != MethodReject {
		t.Errorf("user eve: got %q, want reject", ru.Method)
	}

	write("loop.txt", "@loop.txt\n")
	write("loop.conf", "host all @loop.txt all md5\n")
	if _, err := Load(filepath.Join(dir, "loop.conf")); err == nil || !strings.Contains(err.Error(), "nested deeper") {
		t.Fatalf("a self-including file: got %v, want a nesting error", err)
	}
	write("fan.txt", strings.Repeat("@fan2.txt ", 40)+"\n")
	write("fan2.txt", strings.Repeat("@leaf.txt ", 40)+"\n")
	write("leaf.txt", "x\n")
	write("fan.conf", "host all @fan.txt all md5\n")
	if _, err := Load(filepath.Join(dir, "fan.conf")); err == nil || !strings.Contains(err.Error(), "@file reads in all") {
		t.Fatalf("an include fanning out: got %v, want the read budget to stop it", err)
	}
	write("bad.txt", "ok\n+group\n")
	write("bad.conf", "host all @bad.txt all md5\n")
	if _, err := Load(filepath.Join(dir, "bad.conf")); err == nil || !strings.Contains(err.Error(), "bad.txt:2:") {
		t.Fatalf("an include with a group: got %v, want an error naming bad.txt:2", err)
	}
}

func TestOverlongLineIsRefused(t *testing.T) {
	_, err := Parse(strings.NewReader("host "+strings.Repeat("a", maxLineBytes+1)+" all all md5\n"), "hba.conf", nil)
	if err == nil || !strings.Contains(err.Error(), "hba.conf:1: line longer than") {
		t.Fatalf("got %v", err)
	}
}

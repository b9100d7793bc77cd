package hba

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
)

// FuzzParse checks that no file panics Parse, that errors name a line, and
// that parsed rules can be matched.
func FuzzParse(f *testing.F) {
	f.Add([]byte(matrixFile))
	f.Add([]byte("host all @users.txt 10.0.0.0/8 md5\n"))
	f.Add([]byte("host \"a\"\"b\",c all ::/0 trust # c\r\n"))
	include := func(string) ([]byte, error) { return []byte("alice, bob\n@users.txt\n"), nil }
	f.Fuzz(func(t *testing.T, data []byte) {
		rules, err := Parse(bytes.NewReader(data), "hba.conf", include)
		if err != nil {
			var pe *ParseError
			if errors.As(err, &pe) && pe.Line < 1 {
				t.Fatalf("error without a line: %v", err)
			}
			return
		}
		for _, c := range []Conn{
			{Local: true, Database: "app", User: "app"},
			{Addr: netip.MustParseAddr("127.0.0.1"), Database: "app", User: "alice"},
			{TLS: true, Addr: netip.MustParseAddr("::1"), Database: "x", User: "x"},
		} {
			if ru, ok := rules.Match(c); ok && ru.Method == "" {
				t.Fatalf("matched a rule without a method: %+v", ru)
			}
		}
	})
}

package protocol

import "testing"

func TestCStringSplitsTheNameOffAndKeepsTheRest(t *testing.T) {
	for _, c := range []struct {
		in, s, rest string
		ok          bool
	}{
		{"\x00\x00", "", "\x00", true}, // the unnamed portal, then the unnamed statement
		{"\x00", "", "", true},         // the unnamed statement, nothing after it
		{"s1\x00SELECT 1\x00", "s1", "SELECT 1\x00", true},
		{"SELECT 1", "", "", false}, // no terminator
		{"", "", "", false},         // nothing at all
	} {
		s, rest, ok := CString([]byte(c.in))
		if string(s) != c.s || string(rest) != c.rest || ok != c.ok {
			t.Errorf("CString(%q) = %q, %q, %v; want %q, %q, %v", c.in, s, rest, ok, c.s, c.rest, c.ok)
		}
	}
}

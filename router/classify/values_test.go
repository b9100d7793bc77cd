package classify

import (
	"bytes"
	"testing"
)

// Each rewritten value reads in PostgreSQL, with standard_conforming_strings
// on or off, as the value as written reads with the setting given
// (checked against PostgreSQL 15, and end to end in the router's tests).
func TestASetValueIsRewrittenToReadTheSameWhateverStandardConformingStringsIs(t *testing.T) {
	tests := []struct {
		name            string
		value           string
		standardStrings bool
		want            string
	}{
		{"a plain value", "a_schema, public", true, "a_schema, public"},
		{"strings without a backslash", `'$user', 'it''s'`, true, `'$user', 'it''s'`},
		{"strings without a backslash, setting off", `'$user', 'it''s'`, false, `'$user', 'it''s'`},
		{"an escape string", `E'a\\b\'c'`, true, `E'a\\b\'c'`},
		{"a lower-case escape string", `e'a\\b'`, false, `e'a\\b'`},
		{"a backslash, setting on", `'x\y'`, true, `E'x\\y'`},
		{"a backslash and a quote, setting on", `'x\y''z\'`, true, `E'x\\y''z\\'`},
		{"a backslash, setting off", `'x\\y', 'it\'s'`, false, `E'x\\y', E'it\'s'`},
		{"a string touching a word, setting on", `abc'x\y'`, true, `abc E'x\\y'`},
		{"a string continued on the next line, setting on", "'a\\'\n'b'", true, `E'a\\b'`},
		{"a string continued on the next line, setting off", "'a\\''\n'b'", false, "E'a\\''\n'b'"},
		{"Unicode escapes", `U&'a\005fschema'`, true, `E'a_schema'`},
		{"Unicode escapes, setting off", `u&'a\005fschema'`, false, `E'a_schema'`},
		{"Unicode escapes beyond ASCII", `U&'\00e9\+01F600'`, true, `E'\u00e9\U0001f600'`},
		{"a surrogate pair", `U&'\D83D\DE00'`, true, `E'\U0001f600'`},
		{"a backslash and a quote spelled by escapes", `U&'\005c\0027\\'`, true, `E'\\''\\'`},
		{"an escape character of its own", `U&'a!005fb\c!!' UESCAPE '!', x`, true, `E'a_b\\c!', x`},
		{"Unicode escapes continued on the next line", "U&'a\\005f'\n'schema''s'", true, `E'a_schema''s'`},
		{"a name in Unicode escapes, kept", `U&"a\005fschema", b`, true, `U&"a\005fschema", b`},
		{"a name in Unicode escapes with its own escape character, kept", `U&"a!005f" UESCAPE '!'`, true, `U&"a!005f" UESCAPE '!'`},
		{"a quoted name with a backslash, kept", `"x\y", 'p'`, false, `"x\y", 'p'`},
		{"a trailing comment", "a_schema -- why", true, "a_schema  "},
		{"a block comment", "a/* x's */, 'y\\'", true, `a , E'y\\'`},
		{"a dollar quote", `$q$a\b$q$`, true, `$q$a\b$q$`},
		{"a number", `1.5e3 -- x`, true, `1.5e3  `},
		{"a bit string", `B'01', X'1F'`, true, `B'01', X'1F'`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := PortableValue(tc.value, tc.standardStrings)
			if !ok || got != tc.want {
				t.Errorf("PortableValue(%q, %v) = %q, %v; want %q", tc.value, tc.standardStrings, got, ok, tc.want)
			}
		})
	}
}

func TestASetValuePgferryCannotRewriteIsReported(t *testing.T) {
	for _, v := range []string{
		`'abc`, `U&'abc`, `"abc`, `$q$abc`, "a /* b", `'a\'`, // left open (the last with the setting off)
		`U&'\zzzz'`, `U&'\D83D'`, `U&'\0000'`, `U&'a' UESCAPE E'!'`, `U&'a' UESCAPE '+'`, `U&'a' UESCAPE`,
		`N'a\b'`, `B'0\1'`,
	} {
		if got, ok := PortableValue(v, v != `'a\'`); ok {
			t.Errorf("PortableValue(%q) = %q, true; want it not rewritten", v, got)
		}
	}
}

func FuzzPortableValue(f *testing.F) {
	for _, s := range []string{`'x\y'`, `U&'a\005f'`, "a -- b", `E'\\'`, `U&'!0061' UESCAPE '!'`, `$q$'$q$`} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, v string, standardStrings bool) {
		out, ok := PortableValue(v, standardStrings)
		if !ok {
			return
		}
		// A rewritten value splits the same as a statement both ways: what
		// it would hide of the replay after it, it hides either way.
		sql := []byte("SET x TO " + out + "; SET y TO 1")
		for _, backslashes := range []bool{false, true} {
			if stmt, _, open := splitStatementMode(sql, backslashes); open || len(stmt) != len("SET x TO "+out) {
				if !open && bytes.Contains([]byte(out), []byte(";")) {
					continue // a ';' outside quotes in the value itself
				}
				t.Fatalf("PortableValue(%q, %v) = %q, which splits as %q (backslashes %v, open %v)", v, standardStrings, out, stmt, backslashes, open)
			}
		}
	})
}

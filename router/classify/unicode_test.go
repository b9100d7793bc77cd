package classify

import (
	"strings"
	"testing"
)

// The channels below were checked against PostgreSQL 15: LISTEN with each
// spelling, then pg_listening_channels().
func TestAChannelNamedWithUnicodeEscapesIsReadAsPostgreSQLDecodesIt(t *testing.T) {
	tests := []struct {
		name, sql, channel string
	}{
		{"four-digit escapes", `LISTEN U&"\0061bc"`, "abc"},
		{"a lower-case u", `listen u&"\0061bc"`, "abc"},
		{"upper-case hex digits, not folded", `LISTEN U&"A\00C9\00e9"`, "AÉé"},
		{"an escape character of its own", `LISTEN U&"d!0061t" UESCAPE '!'`, "dat"},
		{"the UESCAPE keyword in any case, comments around it", `LISTEN U&"d!0061t" /* c */ uEsCaPe -- d` + "\n '!'", "dat"},
		{"the escape character twice", `LISTEN U&"a!!b" UESCAPE '!'`, "a!b"},
		{"the backslash twice", `LISTEN U&"a\\b"`, `a\b`},
		{"a backslash when another character escapes", `LISTEN U&"a\b!0063" UESCAPE '!'`, `a\bc`},
		{"a six-digit escape", `LISTEN U&"\+000061bc"`, "abc"},
		{"a six-digit escape beyond U+FFFF", `LISTEN U&"\+01F600"`, "\U0001F600"},
		{"a surrogate pair", `LISTEN U&"\D83D\DE00"`, "\U0001F600"},
		{"a surrogate pair in six-digit escapes", `LISTEN U&"\+00D83D\+00DE00"`, "\U0001F600"},
		{"a doubled quote", `LISTEN U&"a""\0062"`, `a"b`},
		{"no escapes at all", `LISTEN U&"MiXeD"`, "MiXeD"},
		{"a statement end after it", `LISTEN U&"\0061bc";`, "abc"},
		{"a name longer than NAMEDATALEN-1 bytes", `LISTEN U&"` + strings.Repeat(`\0061`, 70) + `"`, strings.Repeat("a", 63)},
		{"a long name cut before a character that does not fit", `LISTEN U&"` + strings.Repeat("a", 62) + `\00e9"`, strings.Repeat("a", 62)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if c := SQL([]byte(tc.sql)); c.Listen != tc.channel || c.Pin != "" {
				t.Errorf("SQL(%q) = %+v; want LISTEN of %q", tc.sql, c, tc.channel)
			}
			un := "UN" + tc.sql
			if c := SQL([]byte(un)); c.Unlisten != tc.channel || c.Pin != "" {
				t.Errorf("SQL(%q) = %+v; want UNLISTEN of %q", un, c, tc.channel)
			}
		})
	}
}

// PostgreSQL refuses each of these (or pgferry does not read the UESCAPE
// clause's spelling): LISTEN stays pinned to the server, which answers
// it, and UNLISTEN goes to the server with nothing else done.
func TestAChannelNameWithAnInvalidUnicodeEscapeIsLeftToTheServer(t *testing.T) {
	for _, name := range []string{
		`U&"\zzzz"`, `U&"\006"`, `U&"a\"`, `U&"\+00006"`, `U&"\0000"`, `U&"\+110000"`,
		`U&"\D83D"`, `U&"\DE00"`, `U&"\D83Dx"`, `U&"\D83D\0061"`, `U&"\D83D\\"`,
		`U&"a!b" UESCAPE '!'`, `U&"a" UESCAPE '+'`, `U&"a" UESCAPE 'a'`, `U&"a" UESCAPE ' '`, `U&"a" UESCAPE '"'`,
		`U&"a" UESCAPE ''''`, `U&"a" UESCAPE '!!'`, `U&"a" UESCAPE ''`, `U&"a" UESCAPE`, `U&"a" UESCAPE !`,
		`U&"a" UESCAPE E'!'`, "U&\"a\" UESCAPE '!'\n''", `U&"a" UESCAPE '\'`, `U&"a" UESCAPE 'é'`,
		`U&""`, `U&"abc`, `U&"a" b`, `U & "a"`, `U&'a'`, `U&"a"UESCAPEx '!'`,
	} {
		if c := SQL([]byte("LISTEN " + name)); c.Listen != "" || c.Pin != "LISTEN" {
			t.Errorf("SQL(LISTEN %s) = %+v; want it pinned", name, c)
		}
		if c := SQL([]byte("UNLISTEN " + name)); !c.equal(&Class{}) {
			t.Errorf("SQL(UNLISTEN %s) = %+v; want it left alone", name, c)
		}
	}
}

// A name longer than NAMEDATALEN-1 bytes is the name cut to that length,
// however it is written: the listener's LISTEN of it would otherwise wait
// on a channel the server never reports.
func TestALongChannelNameIsCutAsPostgreSQLCutsIt(t *testing.T) {
	long := strings.Repeat("a", 70)
	for _, sql := range []string{"LISTEN " + long, `LISTEN "` + long + `"`, "LISTEN " + strings.ToUpper(long)} {
		if c := SQL([]byte(sql)); c.Listen != long[:63] {
			t.Errorf("SQL(%q) = %+v; want LISTEN of %q", sql, c, long[:63])
		}
	}
	if c := SQL([]byte(`LISTEN "` + long[:63] + `"`)); c.Listen != long[:63] {
		t.Errorf("a name of 63 bytes: %+v", c)
	}
	if c := SQL([]byte(`LISTEN "` + strings.Repeat("a", 62) + "é\"")); c.Listen != strings.Repeat("a", 62) {
		t.Errorf("a name cut within a character: %+v; want it cut before the character", c)
	}
	// Bytes that are not UTF-8 where the cut falls: not read.
	if c := SQL([]byte("LISTEN \"" + strings.Repeat("a", 62) + "\xe9\xe9\"")); c.Listen != "" {
		t.Errorf("a name that is not UTF-8 cut among its bytes: %+v; want it not read", c)
	}
}

func TestAQuotedChannelNameWithSomethingAfterItIsLeftToTheServer(t *testing.T) {
	if c := SQL([]byte(`LISTEN "a" b`)); c.Listen != "" || c.Pin != "LISTEN" {
		t.Errorf("SQL = %+v; want it pinned", c)
	}
	if c := SQL([]byte(`LISTEN "a" /* c */ -- d`)); c.Listen != "a" {
		t.Errorf("SQL = %+v; want LISTEN of a", c)
	}
}

func FuzzChannelName(f *testing.F) {
	for _, s := range []string{`U&"\0061bc"`, `U&"d!0061t" UESCAPE '!'`, `U&"\D83D\DE00"`, `"a""b"`, `abc`, `U&"\+01F600"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		name := channelName(b)
		if len(name) > maxNameLen {
			t.Fatalf("channelName(%q) = %q, longer than %d bytes", b, name, maxNameLen)
		}
	})
}

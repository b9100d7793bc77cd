// This file reads names and strings written with Unicode escapes
// (U&"..." and U&'...', with an optional UESCAPE clause) as PostgreSQL
// decodes them: str_udeescape and base_yylex in src/backend/parser/parser.c.

package classify

import (
	"bytes"
	"unicode/utf8"
)

// maxNameLen is the longest name PostgreSQL keeps, in bytes: NAMEDATALEN-1
// (src/include/pg_config_manual.h). A longer identifier is cut to it
// (truncate_identifier in src/backend/parser/scansup.c).
const maxNameLen = 63

// quotedIdent reads the double-quoted identifier r starts with (its
// opening quote at r[0]): its name, with "" read as ", and the rest after
// its closing quote. ok is false for a name left open or empty (PostgreSQL
// refuses both).
func quotedIdent(r []byte) (name []byte, rest []byte, ok bool) {
	for i := 1; ; {
		q := bytes.IndexByte(r[i:], '"')
		if q < 0 {
			return nil, r, false
		}
		name = append(name, r[i:i+q]...)
		i += q + 1
		if i < len(r) && r[i] == '"' {
			name = append(name, '"')
			i++
			continue
		}
		return name, r[i:], len(name) > 0
	}
}

// unicodeIdent reads the Unicode escape identifier r starts with (U&"...",
// any case of U, then an optional UESCAPE clause): the name its escapes
// spell, not folded to lower case, and the rest of r. ok is false for one
// PostgreSQL refuses (an invalid escape, a lone surrogate, an escape
// character it does not allow) and for a UESCAPE clause pgferry does not
// read (see uescape).
func unicodeIdent(r []byte) (name string, rest []byte, ok bool) {
	body, rest, ok := quotedIdent(r[2:])
	if !ok {
		return "", r, false
	}
	esc, rest, ok := uescape(rest)
	if !ok {
		return "", r, false
	}
	b, ok := unescapeUnicode(nil, body, esc, utf8.AppendRune, appendByte)
	if !ok {
		return "", r, false
	}
	return string(b), rest, true
}

// unicodeStart reports whether r starts with the U& of a Unicode escape
// identifier (quote: a double quote) or string (a single quote): xuistart and
// xusstart in PostgreSQL's scan.l, nothing between the three bytes.
func unicodeStart(r []byte, quote byte) bool {
	return len(r) > 2 && r[0]|0x20 == 'u' && r[1] == '&' && r[2] == quote
}

// uescape reads the UESCAPE clause that may follow a Unicode escape name
// or string (r is what follows it): the escape character it names, or the
// backslash when there is none, and the rest after the clause. PostgreSQL
// takes any string constant one byte long there (base_yylex); pgferry
// reads only the plain '<c>', and reports !ok for every other spelling
// (a continued string, E'...') and for a character PostgreSQL refuses
// (check_uescapechar: a hex digit, '+', a quote or a blank). It refuses a
// backslash too: '\' reads as an open string when standard_conforming_strings
// is off, and the backslash is the escape character anyway.
func uescape(r []byte) (esc byte, rest []byte, ok bool) {
	t := skipSpace(r)
	if len(t) < 7 || !lowerIs(t[:7], "uescape") || len(t) > 7 && identCont(t[7]) {
		return '\\', r, true
	}
	t = skipSpace(t[7:])
	if len(t) < 3 || t[0] != '\'' || t[2] != '\'' || len(t) > 3 && t[3] == '\'' {
		return 0, r, false
	}
	c := t[1]
	if c <= ' ' || c >= 0x7f || c == '+' || c == '\'' || c == '"' || c == '\\' || isHex(c) {
		return 0, r, false
	}
	return c, t[3:], true
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c|0x20 >= 'a' && c|0x20 <= 'f'
}

func hexValue(b []byte) rune {
	var v rune
	for _, c := range b {
		switch {
		case c <= '9':
			v = v<<4 | rune(c-'0')
		default:
			v = v<<4 | rune(c|0x20-'a'+10)
		}
	}
	return v
}

func appendByte(dst []byte, c byte) []byte { return append(dst, c) }

// unescapeUnicode decodes the Unicode escapes of body (a name's or a
// string's text, its doubled quotes already read) with escape character
// esc, as PostgreSQL's str_udeescape does, appending each code point an
// escape spells with code and every other byte with lit. The escapes are
// esc followed by four hex digits, or by '+' and six; esc twice is esc
// itself. A UTF-16 surrogate pair spelled as two escapes is one code
// point; ok is false for anything PostgreSQL refuses: another use of esc,
// a code point 0 or above U+10FFFF, a surrogate not in such a pair.
func unescapeUnicode(dst, body []byte, esc byte, code func([]byte, rune) []byte, lit func([]byte, byte) []byte) (out []byte, ok bool) {
	var high rune // the first half of a surrogate pair, waiting for its second
	for i := 0; i < len(body); {
		if body[i] != esc {
			if high != 0 {
				return dst, false
			}
			dst = lit(dst, body[i])
			i++
			continue
		}
		var cp rune
		switch e := body[i+1:]; {
		case len(e) > 0 && e[0] == esc:
			if high != 0 {
				return dst, false
			}
			dst = lit(dst, esc)
			i += 2
			continue
		case len(e) >= 4 && isHex(e[0]) && isHex(e[1]) && isHex(e[2]) && isHex(e[3]):
			cp = hexValue(e[:4])
			i += 5
		case len(e) >= 7 && e[0] == '+' && isHex(e[1]) && isHex(e[2]) && isHex(e[3]) && isHex(e[4]) && isHex(e[5]) && isHex(e[6]):
			cp = hexValue(e[1:7])
			i += 8
		default:
			return dst, false // "invalid Unicode escape"
		}
		if cp <= 0 || cp > utf8.MaxRune {
			return dst, false // "invalid Unicode escape value"
		}
		switch {
		case high != 0:
			if cp < 0xdc00 || cp > 0xdfff {
				return dst, false
			}
			cp = 0x10000 + (high-0xd800)<<10 + (cp - 0xdc00)
			high = 0
		case cp >= 0xdc00 && cp <= 0xdfff:
			return dst, false
		case cp >= 0xd800 && cp <= 0xdbff:
			high = cp
			continue
		}
		dst = code(dst, cp)
	}
	return dst, high == 0 // (an unfinished pair is refused)
}

// truncateName cuts a name to maxNameLen bytes as PostgreSQL does, at a
// character's start (pg_mbcliplen). Names are taken to be UTF-8, as
// pgferry's decoding of escapes makes them: a longer name that is not, and
// whose cut falls among bytes from 0x80, is not read ("").
func truncateName(name string) string {
	if len(name) <= maxNameLen {
		return name
	}
	cut := maxNameLen
	if !utf8.ValidString(name) {
		for k := range cut + 1 {
			if name[k] >= 0x80 {
				return ""
			}
		}
		return name[:cut]
	}
	for cut > 0 && !utf8.RuneStart(name[cut]) {
		cut--
	}
	return name[:cut]
}

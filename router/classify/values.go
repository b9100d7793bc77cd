// This file rewrites the value of a SET so that it can be replayed on
// another server connection, whatever standard_conforming_strings is there.

package classify

import (
	"bytes"
	"strings"
)

// PortableValue rewrites v, the value of a SET as the client wrote it
// (Class.SetValue), read with standard_conforming_strings on if
// standardStrings is set, into SQL text that PostgreSQL reads the same
// whatever that setting is, so that pgferry can replay it on another
// server connection:
//
//   - A string constant whose reading depends on the setting (a plain
//     '...' with a backslash in it, or one with Unicode escapes, U&'...'
//     with or without a UESCAPE clause, which PostgreSQL refuses when the
//     setting is off) becomes an escape string, E'...', of the same text:
//     the code points of Unicode escapes beyond ASCII as \u or \U escapes,
//     which PostgreSQL converts to the server's encoding as it does those
//     of U&'...'.
//   - Comments become blanks: a "--" comment at the end of the value would
//     hide whatever the replay puts after it.
//   - Everything else (names, numbers, E'...', strings without a
//     backslash, dollar quotes) is kept as written.
//
// PostgreSQL reads a whole query before it runs any of it, so a replay
// that also sets standard_conforming_strings is read with the setting the
// server had before it: the value must not depend on either. ok is false
// for a value pgferry cannot rewrite so: a quote or comment left open,
// Unicode escapes PostgreSQL refuses or whose UESCAPE clause pgferry does
// not read (see uescape), a backslash in a national or bit string.
func PortableValue(v string, standardStrings bool) (out string, ok bool) {
	if !strings.ContainsAny(v, `'"$-/&\`) {
		return v, true // a value without quotes or comments: as it is
	}
	b := []byte(v)
	dst := make([]byte, 0, len(b)+8)
	for i := 0; i < len(b); {
		c := b[i]
		switch {
		case c == '-' && i+1 < len(b) && b[i+1] == '-':
			j := lineEnd(b[i:])
			if j < 0 {
				j = len(b) - i
			}
			dst = append(dst, ' ')
			i += j // (the newline itself next)
		case c == '/' && i+1 < len(b) && b[i+1] == '*':
			j := blockCommentEnd(b[i+2:])
			if j < 0 {
				return "", false
			}
			dst = append(dst, ' ')
			i += 2 + j
		case c == '"':
			_, rest, ok := quotedIdent(b[i:])
			if !ok {
				return "", false
			}
			n := len(b) - len(rest)
			dst = append(dst, b[i:n]...)
			i = n
		case c == '$' && !inIdentifier(b, i):
			n, ok := dollarQuoteEnd(b[i:])
			if !ok {
				return "", false
			}
			dst = append(dst, b[i:i+n]...)
			i += n
		case c == '\'':
			var n int
			if dst, n, ok = appendPlainString(dst, b[i:], standardStrings); !ok {
				return "", false
			}
			i += n
		case identCont(c):
			// A word, and perhaps the prefix of the string it touches:
			// E'...', U&'...', N'...', B'...', X'...' (a prefix of one
			// letter that starts a token, as in PostgreSQL's scan.l).
			k := i
			for k < len(b) && identCont(b[k]) && (b[k] != '$' || inIdentifier(b, k)) {
				k++ // (a '$' after digits alone may open a dollar quote)
			}
			switch {
			case k-i != 1:
			case unicodeStart(b[i:], '\''):
				var n int
				if dst, n, ok = appendUnicodeString(dst, b[i:]); !ok {
					return "", false
				}
				i += n
				continue
			case k < len(b) && b[k] == '\'':
				var n int
				switch c | 0x20 {
				case 'e':
					n = escapeStringEnd(b[k+1:])
					if n < 0 {
						return "", false
					}
					n++ // the opening quote
				case 'n', 'b', 'x':
					text, m, ok := readString(b[k:])
					if !ok || bytes.IndexByte(text, '\\') >= 0 {
						return "", false // (PostgreSQL refuses a SET of one anyway)
					}
					n = m
				}
				dst = append(dst, b[i:k+n]...)
				i = k + n
				continue
			}
			dst = append(dst, b[i:k]...)
			i = k
		default:
			dst = append(dst, c)
			i++
		}
	}
	return string(dst), true
}

// dollarQuoteEnd returns how long the dollar quote b starts with is (tag
// to closing tag); ok is false for one left open. A '$' that opens none is
// one byte long.
func dollarQuoteEnd(b []byte) (n int, ok bool) {
	j := bytes.IndexByte(b[1:], '$')
	if j < 0 || !dollarTag(b[1:1+j]) {
		return 1, true
	}
	tag := b[:j+2]
	k := bytes.Index(b[len(tag):], tag)
	if k < 0 {
		return 0, false
	}
	return len(tag) + k + len(tag), true
}

// readString reads the string constant whose opening quote b starts with,
// as a plain string (a doubled quote is one, a backslash is itself): its
// text, its pieces continued on later lines joined (quoteContinues), and
// its length in b. ok is false for one left open.
func readString(b []byte) (text []byte, n int, ok bool) {
	for i := 1; ; {
		q := bytes.IndexByte(b[i:], '\'')
		if q < 0 {
			return nil, 0, false
		}
		text = append(text, b[i:i+q]...)
		i += q + 1
		switch {
		case i < len(b) && b[i] == '\'':
			text = append(text, '\'')
			i++
		default:
			c := quoteContinues(b[i:])
			if c < 0 {
				return text, i, true
			}
			i += c + 1
		}
	}
}

// appendPlainString appends the plain string constant b starts with ('...')
// to dst, as an escape string if its reading depends on
// standard_conforming_strings (it has a backslash), and returns its length
// in b.
func appendPlainString(dst, b []byte, standardStrings bool) (out []byte, n int, ok bool) {
	if !standardStrings {
		// An escape string already: E'...' reads it so in both settings.
		n = escapeStringEnd(b[1:])
		if n < 0 {
			return dst, 0, false
		}
		n++
		if bytes.IndexByte(b[:n], '\\') >= 0 {
			return append(appendEscapeStringStart(dst), b[1:n]...), n, true
		}
		return append(dst, b[:n]...), n, true
	}
	text, n, ok := readString(b)
	if !ok {
		return dst, 0, false
	}
	if bytes.IndexByte(text, '\\') < 0 {
		return append(dst, b[:n]...), n, true
	}
	dst = appendEscapeStringStart(dst)
	for _, c := range text {
		dst = appendEscapeStringByte(dst, c)
	}
	return append(dst, '\''), n, true
}

// appendUnicodeString appends the Unicode escape string constant b starts
// with (U&'...' and any UESCAPE clause after it) to dst as an escape
// string of the same text, and returns its length in b.
func appendUnicodeString(dst, b []byte) (out []byte, n int, ok bool) {
	text, m, ok := readString(b[2:])
	if !ok {
		return dst, 0, false
	}
	rest := b[2+m:]
	esc, rest, ok := uescape(rest)
	if !ok {
		return dst, 0, false
	}
	dst = appendEscapeStringStart(dst)
	if dst, ok = unescapeUnicode(dst, text, esc, appendEscapeStringRune, appendEscapeStringByte); !ok {
		return dst, 0, false
	}
	return append(dst, '\''), len(b) - len(rest), true
}

// appendEscapeStringStart appends the start of an escape string, E', to
// dst, after a blank if dst ends in a word: the E must start a token.
func appendEscapeStringStart(dst []byte) []byte {
	if len(dst) > 0 && identCont(dst[len(dst)-1]) {
		dst = append(dst, ' ')
	}
	return append(dst, 'E', '\'')
}

// appendEscapeStringByte appends byte c of a text to an escape string
// being written: a quote or backslash doubled (never \', which
// backslash_quote may refuse), every other byte as it is.
func appendEscapeStringByte(dst []byte, c byte) []byte {
	switch c {
	case '\'', '\\':
		return append(dst, c, c)
	}
	return append(dst, c)
}

// appendEscapeStringRune appends code point r, spelled by a Unicode escape,
// to an escape string being written: as itself in ASCII, as a \u or \U
// escape beyond.
func appendEscapeStringRune(dst []byte, r rune) []byte {
	if r < 0x80 {
		return appendEscapeStringByte(dst, byte(r))
	}
	const hex = "0123456789abcdef"
	digits := 4
	if r > 0xffff {
		digits = 8
		dst = append(dst, '\\', 'U')
	} else {
		dst = append(dst, '\\', 'u')
	}
	for k := digits - 1; k >= 0; k-- {
		dst = append(dst, hex[r>>(4*k)&0xf])
	}
	return dst
}

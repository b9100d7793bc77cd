package auth

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"strings"
	"sync/atomic"
)

// Store maps user names to Credentials. It is safe for concurrent use;
// Lookup never blocks and Replace swaps the whole map atomically, so a reload
// (SIGHUP) never exposes a half-built set of users.
type Store struct {
	users atomic.Pointer[map[string]Credential] // never nil after NewStore; the map is never mutated
}

// NewStore returns a Store holding a copy of creds (nil is an empty store).
func NewStore(creds map[string]Credential) *Store {
	s := &Store{}
	s.Replace(creds)
	return s
}

// Lookup returns the credential of user and whether the user is known.
func (s *Store) Lookup(user string) (Credential, bool) {
	c, ok := (*s.users.Load())[user]
	return c, ok
}

// Replace atomically replaces the store's contents with a copy of creds.
// Lookups running concurrently see either the old or the new set.
func (s *Store) Replace(creds map[string]Credential) {
	m := maps.Clone(creds)
	if m == nil {
		m = map[string]Credential{}
	}
	s.users.Store(&m)
}

// Names returns the names of the users in the store, in no order.
func (s *Store) Names() []string {
	m := *s.users.Load()
	out := make([]string, 0, len(m))
	for name := range m {
		out = append(out, name)
	}
	return out
}

// Len returns the number of users in the store.
func (s *Store) Len() int { return len(*s.users.Load()) }

// maxUserlistLine bounds one auth_file line. PgBouncer limits a password to
// MAX_PASSWORD (2048) bytes; this leaves room for long names and trailing
// fields while keeping memory bounded.
const maxUserlistLine = 64 * 1024

// ParseUserlist parses a PgBouncer auth_file (userlist.txt) from r. Each
// non-blank line is
//
//	"username" "secret" anything ignored
//
// with both fields double-quoted, "" standing for a literal quote inside a
// field, and the secret interpreted by ParseCredential. Blank lines and lines
// whose first non-blank character is ';' (PgBouncer) or '#' are skipped.
// Unlike PgBouncer, which stops reading at the first broken line and keeps
// what it has, a malformed line is an error naming its line number; errors
// never include secrets. A user listed twice keeps its last entry, as in
// PgBouncer.
func ParseUserlist(r io.Reader) (map[string]Credential, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxUserlistLine)
	creds := map[string]Credential{}
	lineNo := 0
	for sc.Scan() {
		lineNo++
		line := strings.TrimLeft(sc.Text(), " \t\r\v\f")
		if line == "" || line[0] == ';' || line[0] == '#' {
			continue
		}
		user, rest, err := readQuoted(line)
		if err != nil {
			return nil, fmt.Errorf("userlist line %d: user name: %w", lineNo, err)
		}
		if user == "" {
			return nil, fmt.Errorf("userlist line %d: empty user name", lineNo)
		}
		trimmed := strings.TrimLeft(rest, " \t\r\v\f")
		if len(trimmed) == len(rest) && rest != "" {
			return nil, fmt.Errorf("userlist line %d: missing space after user name", lineNo)
		}
		secret, _, err := readQuoted(trimmed)
		if err != nil {
			return nil, fmt.Errorf("userlist line %d: secret: %w", lineNo, err)
		}
		cred, err := ParseCredential(user, secret)
		if err != nil {
			return nil, fmt.Errorf("userlist line %d: %w", lineNo, err)
		}
		creds[user] = cred
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("userlist line %d: line longer than %d bytes", lineNo+1, maxUserlistLine)
		}
		return nil, fmt.Errorf("read userlist: %w", err)
	}
	return creds, nil
}

// readQuoted reads one double-quoted field at the start of s, where ""
// stands for a quote, and returns its unquoted value and what follows the
// closing quote. Its errors never include s.
func readQuoted(s string) (value, rest string, err error) {
	if s == "" || s[0] != '"' {
		return "", "", errors.New("expected opening double quote")
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		if s[i] != '"' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == '"' {
			b.WriteByte('"')
			i++
			continue
		}
		return b.String(), s[i+1:], nil
	}
	return "", "", errors.New("missing closing double quote")
}

// LoadUserlist reads and parses the auth_file at path; see ParseUserlist.
func LoadUserlist(path string) (map[string]Credential, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open userlist: %w", err)
	}
	defer f.Close()
	creds, err := ParseUserlist(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return creds, nil
}

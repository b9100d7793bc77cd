package hba

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// Method is the authentication method of a rule, spelled as in the file.
type Method string

// The methods pgferry implements. PgBouncer also knows peer (unix socket
// peer credentials), ldap and pam; pgferry refuses a file naming them.
const (
	MethodTrust    Method = "trust"
	MethodReject   Method = "reject"
	MethodPassword Method = "password" // cleartext; auth_type "plain"
	MethodMD5      Method = "md5"
	MethodSCRAM    Method = "scram-sha-256"
	MethodCert     Method = "cert"
)

// ConnType is the connection type of a rule: the first field of a line.
type ConnType string

// The connection types PgBouncer accepts.
const (
	ConnLocal     ConnType = "local"
	ConnHost      ConnType = "host"
	ConnHostSSL   ConnType = "hostssl"
	ConnHostNoSSL ConnType = "hostnossl"
)

// Limits on what a file may make the parser read.
const (
	maxLineBytes     = 64 << 10 // one line
	maxIncludeBytes  = 1 << 20  // one @file
	maxIncludeDepth  = 10       // @file nesting (a file including itself)
	maxIncludes      = 1000     // @file reads per Parse (several includes nested deep)
	maxRuleNameCount = 1 << 16  // names per field, includes counted
)

// ParseError is a line of an hba file that pgferry cannot honour. Its
// message names the file and the line; it never quotes more of the line
// than the offending token.
type ParseError struct {
	File string
	Line int
	Msg  string
}

func (e *ParseError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg) }

// names is one database or user field.
type names struct {
	all         bool // "all"
	sameUser    bool // "sameuser" (database field only)
	replication bool // "replication" (database field only): matches no pgferry connection
	set         map[string]struct{}
}

func (n *names) match(name, pair string) bool {
	if n.all || (n.sameUser && name == pair) {
		return true
	}
	_, ok := n.set[name]
	return ok
}

// Rule is one line of the file.
type Rule struct {
	// File and Line locate the rule, for logs.
	File string
	Line int
	// Type is the connection type and Method the authentication method.
	Type   ConnType
	Method Method

	databases, users names
	anyAddr          bool         // address "all"
	prefix           netip.Prefix // the address, unless local or anyAddr
}

// Rules is a parsed hba file. It is immutable and safe for concurrent use.
type Rules struct {
	rules []Rule
}

// All returns a copy of the rules in file order.
func (r *Rules) All() []Rule { return append([]Rule(nil), r.rules...) }

// Conn describes a client connection for Match.
type Conn struct {
	// Local is true for a unix socket connection; Addr is then ignored.
	Local bool
	// TLS is true when the connection is encrypted.
	TLS bool
	// Addr is the client's address.
	Addr     netip.Addr
	Database string
	User     string
}

// Match returns the first rule that applies to c, as PgBouncer's hba_eval
// does. ok is false when no rule applies: the client must be rejected. An
// IPv6 address is matched without its zone, as PostgreSQL's check_ip
// compares the address alone: netip.Prefix.Contains never matches a zoned
// address, which would let a link-local client pass its reject lines.
func (r *Rules) Match(c Conn) (rule Rule, ok bool) {
	addr := c.Addr.Unmap().WithZone("")
	for _, ru := range r.rules {
		switch {
		case c.Local:
			if ru.Type != ConnLocal {
				continue
			}
		case ru.Type == ConnLocal:
			continue
		case ru.Type == ConnHostSSL && !c.TLS, ru.Type == ConnHostNoSSL && c.TLS:
			continue
		case !ru.anyAddr && !ru.prefix.Contains(addr):
			continue
		}
		if !ru.databases.match(c.Database, c.User) || !ru.users.match(c.User, c.Database) {
			continue
		}
		return ru, true
	}
	return Rule{}, false
}

// Load reads and parses the hba file at path; @file includes are read
// relative to its directory.
func Load(path string) (*Rules, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(f, path, nil)
}

// Parse parses an hba file read from r; file names it in errors and
// anchors relative @file includes, which are read with readFile (nil:
// os.ReadFile). Every line that pgferry cannot honour is an error: the
// first one is returned as a *ParseError.
func Parse(r io.Reader, file string, readFile func(string) ([]byte, error)) (*Rules, error) {
	if readFile == nil {
		readFile = os.ReadFile
	}
	p := &parser{readFile: readFile}
	rules := &Rules{}
	err := eachLine(r, func(lineNo int, line string) error {
		ru, ok, err := p.parseLine(file, lineNo, line)
		if err != nil {
			return err
		}
		if ok {
			rules.rules = append(rules.rules, ru)
		}
		return nil
	}, file)
	if err != nil {
		return nil, err
	}
	return rules, nil
}

// eachLine calls fn for each line of r, numbered from 1.
func eachLine(r io.Reader, fn func(int, string) error, file string) error {
	br := bufio.NewReader(r)
	for lineNo := 1; ; lineNo++ {
		line, err := readLine(br)
		if errors.Is(err, errLineTooLong) {
			return &ParseError{File: file, Line: lineNo, Msg: fmt.Sprintf("line longer than %d bytes", maxLineBytes)}
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read %s: %w", file, err)
		}
		if len(line) > 0 || err == nil {
			if ferr := fn(lineNo, line); ferr != nil {
				return ferr
			}
		}
		if err != nil {
			return nil
		}
	}
}

var errLineTooLong = errors.New("line too long")

// readLine reads one line without its terminator, bounded by maxLineBytes.
func readLine(br *bufio.Reader) (string, error) {
	var b []byte
	for {
		chunk, err := br.ReadSlice('\n')
		b = append(b, chunk...)
		if len(b) > maxLineBytes {
			return "", errLineTooLong
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		b = bytes.TrimSuffix(b, []byte("\n"))
		b = bytes.TrimSuffix(b, []byte("\r"))
		return string(b), err
	}
}

type parser struct {
	readFile func(string) ([]byte, error)
	includes int // @file reads so far
}

// token kinds, as in PgBouncer's TokParser.
type tokKind int

const (
	tokIdent  tokKind = iota // unquoted word
	tokString                // "quoted" word ("" is a quote)
	tokComma
)

type token struct {
	kind tokKind
	s    string
}

// tokenize splits a line like PgBouncer's next_token: whitespace separates,
// a comma is a token of its own, '#' starts a comment, double quotes make a
// string in which "" stands for one quote. An unquoted word ends at
// whitespace, a comma, '#' or '"'.
func tokenize(line string) ([]token, error) {
	var toks []token
	i := 0
	for i < len(line) {
		c := line[i]
		switch {
		case isSpace(c):
			i++
		case c == '#':
			return toks, nil
		case c == ',':
			toks = append(toks, token{kind: tokComma, s: ","})
			i++
		case c == '"':
			var b strings.Builder
			j := i + 1
			for {
				if j >= len(line) {
					return nil, errors.New("unterminated quoted name")
				}
				if line[j] == '"' {
					if j+1 < len(line) && line[j+1] == '"' {
						b.WriteByte('"')
						j += 2
						continue
					}
					break
				}
				b.WriteByte(line[j])
				j++
			}
			toks = append(toks, token{kind: tokString, s: b.String()})
			i = j + 1
		default:
			j := i + 1
			for j < len(line) && !isSpace(line[j]) && line[j] != ',' && line[j] != '#' && line[j] != '"' {
				j++
			}
			toks = append(toks, token{kind: tokIdent, s: line[i:j]})
			i = j
		}
	}
	return toks, nil
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'
}

// lineParser walks the tokens of one line.
type lineParser struct {
	*parser
	file string
	line int
	toks []token
	pos  int
}

func (lp *lineParser) errorf(format string, args ...any) error {
	return &ParseError{File: lp.file, Line: lp.line, Msg: fmt.Sprintf(format, args...)}
}

func (lp *lineParser) peek() (token, bool) {
	if lp.pos >= len(lp.toks) {
		return token{}, false
	}
	return lp.toks[lp.pos], true
}

func (lp *lineParser) next() (token, bool) {
	t, ok := lp.peek()
	if ok {
		lp.pos++
	}
	return t, ok
}

// parseLine parses one line; ok is false for a blank or comment line.
func (p *parser) parseLine(file string, lineNo int, line string) (Rule, bool, error) {
	toks, err := tokenize(line)
	if err != nil {
		return Rule{}, false, &ParseError{File: file, Line: lineNo, Msg: err.Error()}
	}
	if len(toks) == 0 {
		return Rule{}, false, nil
	}
	lp := &lineParser{parser: p, file: file, line: lineNo, toks: toks}
	ru := Rule{File: file, Line: lineNo}

	t, _ := lp.next()
	switch ConnType(t.s) {
	case ConnLocal, ConnHost, ConnHostSSL, ConnHostNoSSL:
		if t.kind != tokIdent {
			return Rule{}, false, lp.errorf("connection type must not be quoted")
		}
		ru.Type = ConnType(t.s)
	case "hostgssenc", "hostnogssenc":
		return Rule{}, false, lp.errorf("connection type %q is not supported (PgBouncer accepts local, host, hostssl and hostnossl)", t.s)
	default:
		return Rule{}, false, lp.errorf("unknown connection type %q: want local, host, hostssl or hostnossl", t.s)
	}
	if ru.databases, err = lp.parseNames(true, 0); err != nil {
		return Rule{}, false, err
	}
	if ru.users, err = lp.parseNames(false, 0); err != nil {
		return Rule{}, false, err
	}
	if ru.Type != ConnLocal {
		if err := lp.parseAddress(&ru); err != nil {
			return Rule{}, false, err
		}
	}
	t, ok := lp.next()
	if !ok {
		return Rule{}, false, lp.errorf("missing authentication method")
	}
	if t.kind != tokIdent {
		return Rule{}, false, lp.errorf("authentication method must not be quoted")
	}
	switch m := Method(t.s); m {
	case MethodTrust, MethodReject, MethodPassword, MethodMD5, MethodSCRAM, MethodCert:
		ru.Method = m
	case "peer", "ldap", "pam":
		return Rule{}, false, lp.errorf("authentication method %q is not supported by pgferry", t.s)
	default:
		return Rule{}, false, lp.errorf("unsupported authentication method %q: want trust, reject, password, md5, scram-sha-256 or cert", t.s)
	}
	if t, ok := lp.next(); ok {
		if strings.HasPrefix(t.s, "map=") {
			return Rule{}, false, lp.errorf("option map= (user name maps, PgBouncer's auth_ident_file) is not supported by pgferry")
		}
		return Rule{}, false, lp.errorf("unexpected %q after the authentication method: options are not supported", clip(t.s))
	}
	return ru, true, nil
}

// parseNames parses a comma-separated database or user field. depth counts
// @file nesting.
func (lp *lineParser) parseNames(isDB bool, depth int) (names, error) {
	field := "user"
	if isDB {
		field = "database"
	}
	var n names
	for {
		t, ok := lp.next()
		if !ok {
			return n, lp.errorf("missing %s field", field)
		}
		if err := lp.addName(&n, t, isDB, depth); err != nil {
			return n, err
		}
		if c, ok := lp.peek(); !ok || c.kind != tokComma {
			return n, nil
		}
		lp.pos++
	}
}

// addName adds one token of a name field to n.
func (lp *lineParser) addName(n *names, t token, isDB bool, depth int) error {
	if t.kind == tokComma {
		return lp.errorf("empty name in a list")
	}
	if t.kind == tokIdent {
		switch t.s {
		case "all":
			n.all = true
			return nil
		case "sameuser", "replication", "samerole", "samegroup":
			if !isDB {
				return lp.errorf("keyword %q is not allowed in the user field (quote it to mean a user of that name)", t.s)
			}
			switch t.s {
			case "sameuser":
				n.sameUser = true
				return nil
			case "replication":
				n.replication = true
				return nil
			}
			return lp.errorf("%q is not supported (neither by PgBouncer)", t.s)
		}
		switch t.s[0] {
		case '+':
			return lp.errorf("%q: group membership (+group) is not supported (neither by PgBouncer)", clip(t.s))
		case '@':
			return lp.include(n, t.s[1:], isDB, depth)
		}
	}
	if t.s == "" {
		return lp.errorf("empty name")
	}
	if n.set == nil {
		n.set = map[string]struct{}{}
	}
	if len(n.set) >= maxRuleNameCount {
		return lp.errorf("more than %d names in one field", maxRuleNameCount)
	}
	n.set[t.s] = struct{}{}
	return nil
}

// include reads the names of an @file, relative to the including file's
// directory: names separated by commas or whitespace, # comments.
func (lp *lineParser) include(n *names, name string, isDB bool, depth int) error {
	if name == "" {
		return lp.errorf("@ without a file name")
	}
	if depth >= maxIncludeDepth {
		return lp.errorf("@%s: @file includes nested deeper than %d", clip(name), maxIncludeDepth)
	}
	if lp.includes++; lp.includes > maxIncludes {
		return lp.errorf("@%s: more than %d @file reads in all", clip(name), maxIncludes)
	}
	path := name
	if !filepath.IsAbs(path) {
		path = filepath.Join(filepath.Dir(lp.file), path)
	}
	data, err := lp.readFile(path)
	if err != nil {
		return lp.errorf("@%s: %v", clip(name), err)
	}
	if len(data) > maxIncludeBytes {
		return lp.errorf("@%s: larger than %d bytes", clip(name), maxIncludeBytes)
	}
	return eachLine(bytes.NewReader(data), func(lineNo int, line string) error {
		toks, err := tokenize(line)
		if err != nil {
			return &ParseError{File: path, Line: lineNo, Msg: err.Error()}
		}
		inc := &lineParser{parser: lp.parser, file: path, line: lineNo, toks: toks}
		for _, t := range toks {
			if t.kind == tokComma {
				continue
			}
			if err := inc.addName(n, t, isDB, depth+1); err != nil {
				return err
			}
		}
		return nil
	}, path)
}

// parseAddress parses the address field: "all", address/bits, or an
// address followed by a netmask.
func (lp *lineParser) parseAddress(ru *Rule) error {
	t, ok := lp.next()
	if !ok {
		return lp.errorf("missing address")
	}
	if t.kind != tokIdent {
		return lp.errorf("address must not be quoted")
	}
	switch t.s {
	case "all":
		ru.anyAddr = true
		return nil
	case "samehost", "samenet":
		return lp.errorf("address %q is not supported (neither by PgBouncer)", t.s)
	}
	addrText, _, hasBits := strings.Cut(t.s, "/")
	addr, err := netip.ParseAddr(addrText)
	if err != nil || addr.Zone() != "" {
		return lp.errorf("invalid address %q: want an IPv4 or IPv6 address in CIDR form, an address and a netmask, or all (host names are not supported)", clip(t.s))
	}
	var bits int
	if hasBits {
		pf, err := netip.ParsePrefix(t.s)
		if err != nil {
			return lp.errorf("invalid CIDR mask in %q", clip(t.s))
		}
		bits = pf.Bits()
	} else {
		m, ok := lp.next()
		if !ok || m.kind != tokIdent {
			return lp.errorf("address %q needs a /bits suffix or a netmask", clip(t.s))
		}
		mask, err := netip.ParseAddr(m.s)
		if err != nil || mask.Is4() != addr.Is4() || mask.Zone() != "" {
			return lp.errorf("invalid netmask %q for address %s", clip(m.s), addr)
		}
		if bits, ok = maskBits(mask); !ok {
			return lp.errorf("netmask %s is not contiguous", mask)
		}
	}
	ru.prefix = netip.PrefixFrom(addr, bits)
	if ru.prefix.Masked() != ru.prefix {
		// PgBouncer warns and keeps a line that then never matches;
		// PostgreSQL masks the address. Refuse the ambiguity.
		return lp.errorf("address %s has bits set outside its /%d mask (did you mean %s?)", addr, bits, ru.prefix.Masked())
	}
	return nil
}

// maskBits returns the prefix length of a contiguous netmask.
func maskBits(mask netip.Addr) (int, bool) {
	bits := 0
	seenZero := false
	for _, b := range mask.AsSlice() {
		for i := 7; i >= 0; i-- {
			if b&(1<<i) != 0 {
				if seenZero {
					return 0, false
				}
				bits++
			} else {
				seenZero = true
			}
		}
	}
	return bits, true
}

// clip bounds a token quoted in an error.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

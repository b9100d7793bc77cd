package router

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/protocol"
)

// A client's startup parameters are values no server has accepted yet:
// PostgreSQL refuses a login whose DateStyle, TimeZone, search_path... it
// cannot take (FATAL 22023), but pgferry logs clients in without a
// server and replays their values with each loan (syncParams). A value
// the server refused there would fail the whole replay, which PostgreSQL
// undoes, and the request sent behind it would run with what the server
// held: the previous client's settings. So a login whose startup packet
// sets a value no server of its pool has accepted yet tries it first, on
// a server of the pool, in a transaction rolled back (the server is left
// as it was), and a value refused ends the login with the server's error,
// as PostgreSQL would. A pool remembers the values its servers accepted
// (confirmedParams), so only the first login with a value pays the round
// trip; the relay loop sees only logins whose values are all known
// (loginPlan).

// startupTryTimeout bounds the round trip that tries a login's values.
const startupTryTimeout = 10 * time.Second

// maxConfirmed bounds the values a pool remembers: beyond it, a login
// whose values are not remembered tries them on a server each time.
const maxConfirmed = 1024

// confirmedParams are the startup values a pool's servers accepted, by
// name (gucName: the client's spelling aside) and value.
type confirmedParams struct {
	mu sync.Mutex
	m  map[[2]string]struct{}
}

// known reports whether the pool's servers accepted k = v.
func (c *confirmedParams) known(k, v string) bool {
	c.mu.Lock()
	_, ok := c.m[[2]string{k, v}]
	c.mu.Unlock()
	return ok
}

// forget drops k = v from the values the pool's servers accepted: a
// server refused it since (replayRefusedBy), so the next login with it
// tries it again, and fails as PostgreSQL would fail it.
func (c *confirmedParams) forget(k, v string) {
	c.mu.Lock()
	delete(c.m, [2]string{k, v})
	c.mu.Unlock()
}

// add records values the pool's servers accepted.
func (c *confirmedParams) add(kvs [][2]string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[[2]string]struct{})
	}
	for _, kv := range kvs {
		if len(c.m) >= maxConfirmed {
			return
		}
		c.m[kv] = struct{}{}
	}
}

// eachStartupValue calls f for every run-time parameter of st that
// initParams records (the startup keys that are not parameters, those
// ignore_startup_parameters lists, aside) and that a server could refuse
// (application_name it never refuses), until f returns false. The
// options key counts as one value, whole. It allocates nothing.
func eachStartupValue(cfg *configs.Config, st *protocol.Startup, f func(k, v string) bool) {
	for _, p := range st.Params {
		if startupNotParams[p.Key] && p.Key != "options" || gucEqual(p.Key, "application_name") || ignoredStartup(cfg, p.Key) {
			continue
		}
		if !f(p.Key, p.Value) {
			return
		}
	}
}

// gucName is the spelling pgferry keeps a startup parameter under,
// whatever case the client wrote it in (PostgreSQL's GUC names are
// case-insensitive for A-Z only, guc.c guc_name_compare): the server's
// own for those it reports in mixed case, the name with A-Z lowered for
// the others, as the server reports them. k itself when it is spelled
// so: no allocation.
func gucName(k string) string {
	for _, m := range mixedCaseGUCs {
		if gucEqual(k, m) {
			return m
		}
	}
	return gucLower(k)
}

// gucLower is k with its letters A-Z lowered and nothing else, as
// guc_name_compare folds a parameter name: Ä and ä, or ſ and s, stay two
// letters, as they are two parameters to PostgreSQL. k itself when it has
// no A-Z: no allocation.
func gucLower(k string) string {
	i := 0
	for i < len(k) && !('A' <= k[i] && k[i] <= 'Z') {
		i++
	}
	if i == len(k) {
		return k
	}
	b := []byte(k)
	for ; i < len(b); i++ {
		if c := b[i]; 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// gucEqual reports whether a and b name one parameter to PostgreSQL:
// equal but for the case of A-Z (guc_name_compare; strings.EqualFold
// would also match ſ to s, and K, the Kelvin sign, to k).
func gucEqual(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		ca, cb := a[i], b[i]
		if 'A' <= ca && ca <= 'Z' {
			ca += 'a' - 'A'
		}
		if 'A' <= cb && cb <= 'Z' {
			cb += 'a' - 'A'
		}
		if ca != cb {
			return false
		}
	}
	return true
}

// mixedCaseGUCs are the parameters PostgreSQL reports (ParameterStatus)
// under a name with capitals (guc_tables.c, GUC_REPORT).
var mixedCaseGUCs = [...]string{"DateStyle", "IntervalStyle", "TimeZone"}

// ignoredStartup reports whether ignore_startup_parameters lists k.
func ignoredStartup(cfg *configs.Config, k string) bool {
	for _, i := range cfg.IgnoreStartupParameters {
		if strings.EqualFold(i, k) {
			return true
		}
	}
	return false
}

// startupKnown reports whether e's servers accepted every value of st
// that differs from what they greet with, welcome: such a login needs no
// server.
func (e *poolEntry) startupKnown(cfg *configs.Config, st *protocol.Startup, welcome map[string]string) bool {
	all := true
	eachStartupValue(cfg, st, func(k, v string) bool {
		if k != "options" {
			k = gucName(k)
			if welcome[k] == v {
				return true
			}
		}
		all = e.confirmed.known(k, v)
		return all
	})
	return all
}

// confirmStartup tries the client's startup values no server of its pool
// accepted yet on one of them (see above), and returns the server's
// error, as a FATAL, if it refused one. initParams has run.
func (ss *session) confirmStartup(cfg *configs.Config, st *protocol.Startup) error {
	e := ss.entry
	g, err := ss.welcome()
	if err != nil || g == nil {
		return err
	}
	welcome, _ := e.setWelcome(nil)
	if e.startupKnown(cfg, st, welcome) {
		return nil
	}
	var kvs [][2]string
	eachStartupValue(cfg, st, func(k, v string) bool {
		if k != "options" {
			k = gucName(k)
		}
		if k == "options" || welcome[k] != v {
			kvs = append(kvs, [2]string{k, v})
		}
		return true
	})
	// What the session recorded (initParams), under its own names: the
	// options key stands for its -c values. Each is set under the name
	// the client wrote, so that a refusal names it as PostgreSQL's own
	// refusal of the startup packet does (unrecognized configuration
	// parameter "FooBar", not "foobar").
	spelled := clientSpellings(cfg, st)
	var sql, enc []byte
	ascii := true
	for _, k := range ss.paramKeys {
		v, ok := ss.params.lookup(k)
		if !ok || gucEqual(k, "application_name") {
			continue
		}
		name := k
		if s, ok := spelled[k]; ok {
			name = s
		}
		if k == encodingName {
			enc = appendSet(enc, name, v)
			continue
		}
		sql = appendSet(sql, name, v)
		ascii = ascii && isASCII([]byte(v))
	}
	if enc == nil && !ascii {
		// The values are in the client's encoding, the pool's default.
		enc = appendSet(enc, encodingName, welcome[encodingName])
	}
	ctx, cancel := ss.waitContext(cfg)
	sc, err := e.pool.Acquire(ctx)
	cancel()
	if err != nil {
		return ss.acquireError(err)
	}
	if sc.Wr == nil {
		sc.Wr = protocol.NewWriter(sc.Conn)
	}
	// In a transaction rolled back, the server left as it was. A query is
	// read whole in the connection's encoding before any of it runs: the
	// client's encoding goes first, in a query of its own.
	queries := []string{"BEGIN;" + string(enc) + string(sql) + "ROLLBACK"}
	if !ascii {
		queries = []string{"BEGIN;" + string(enc), string(sql) + "ROLLBACK"}
	}
	var refused *protocol.ServerError
	status := protocol.TxIdle
	// The round trip is bounded by startupTryTimeout, and cut by a kill
	// or shutdown's deadline (loginContext), which leave the server in
	// the middle of it: destroyed below.
	try, stopTry := ss.loginContext(0)
	sc.Conn.SetDeadline(time.Now().Add(startupTryTimeout))
	cut := context.AfterFunc(try, func() { sc.Conn.SetDeadline(time.Unix(1, 0)) })
	for _, q := range queries {
		if status, err = protocol.Exec(sc.Rd, sc.Wr, q, nil); err != nil {
			break
		}
	}
	if errors.As(err, &refused) && status != protocol.TxIdle {
		status, err = protocol.Exec(sc.Rd, sc.Wr, "ROLLBACK", nil)
	}
	wasCut := !cut() // (its deadline past, or about to be)
	stopTry()
	sc.Conn.SetDeadline(time.Time{})
	if wasCut {
		refused, err = nil, try.Err()
	}
	if !wasCut && (err == nil || errors.As(err, &refused)) && status == protocol.TxIdle {
		e.pool.Release(sc)
	} else {
		e.pool.Destroy(sc)
	}
	switch {
	case refused != nil:
		return protocol.Fatal(refused.Code, refused.Message)
	case err != nil && ss.killed() != nil:
		return ss.killed()
	case err != nil && ss.srv.cut.Err() != nil:
		return errDraining
	case err != nil:
		return protocol.Fatal(protocol.SQLStateConnectionFailure, "pgferry could not try the client's startup parameters on a server: "+sanitize(err))
	}
	e.confirmed.add(kvs)
	return nil
}

// clientSpellings maps the name pgferry keeps a startup parameter under
// (gucName, or the tracked parameter's) to the name the client wrote it
// under, for the parameters of st, options' -c values included, that the
// client spelled otherwise; the last spelling wins, as the last value does
// (initParams). nil when there are none.
func clientSpellings(cfg *configs.Config, st *protocol.Startup) map[string]string {
	var m map[string]string
	note := func(k string) {
		if g := gucName(k); g != k {
			if m == nil {
				m = make(map[string]string)
			}
			m[g] = k
		}
	}
	eachStartupValue(cfg, st, func(k, _ string) bool {
		if k != "options" {
			note(k)
		}
		return true
	})
	if opts := st.Get("options"); opts != "" && !ignoredStartup(cfg, "options") {
		kv, _ := parseOptions(opts) // (initParams refused it when it does not parse)
		for _, p := range kv {
			if !ignoredStartup(cfg, p.Key) {
				note(p.Key)
			}
		}
	}
	return m
}

// parseOptions reads the `options` startup parameter: -c name=value and
// --name=value, separated by spaces (backslash escapes a space).
func parseOptions(s string) ([]protocol.Param, error) {
	var args []string
	var cur strings.Builder
	esc := false
	for _, r := range s {
		switch {
		case esc:
			cur.WriteRune(r)
			esc = false
		case r == '\\':
			esc = true
		case r == ' ' || r == '\t':
			if cur.Len() > 0 {
				args = append(args, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		args = append(args, cur.String())
	}
	var out []protocol.Param
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-c" && i+1 < len(args):
			i++
			a = args[i]
		case strings.HasPrefix(a, "-c"):
			a = a[2:]
		case strings.HasPrefix(a, "--"):
			a = a[2:]
		default:
			return nil, protocol.Fatal(protocol.SQLStateProtocolViolation, "unsupported startup parameter in options: "+safeOption(a))
		}
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return nil, protocol.Fatal(protocol.SQLStateProtocolViolation, "unsupported startup parameter in options: "+safeOption(a))
		}
		out = append(out, protocol.Param{Key: strings.ReplaceAll(k, "-", "_"), Value: v})
	}
	return out, nil
}

func safeOption(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	return s
}

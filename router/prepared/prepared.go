// Package prepared gives the protocol-level prepared statements of clients
// their identity on server connections.
//
// Clients name their statements as they like; two clients may use one name
// for different SQL, or different names for the same. On a shared server
// connection pgferry prepares each distinct statement once, under a name of
// its own. That name must stand for exactly one statement: if two different
// statements could share it, one client would run another client's SQL. So a
// statement is identified by its full content (query text and parameter
// types, compared byte for byte), and named from a counter that never
// repeats in the life of the process, as PgBouncer's prepare.c and PgDog do.
// A hash of the content only finds the candidates to compare.
//
// prepared imports nothing of pgferry's; the router uses it.
package prepared

import (
	"bytes"
	"hash/maphash"
	"strconv"
	"sync"
)

// NamePrefix begins the name of every statement on server connections
// (Statement.Name), where the router sends no client's name while it
// tracks statements.
const NamePrefix = "pgferry_"

// Statement is one distinct statement: a Parse message's body after the
// statement name. It is immutable once returned by Acquire; its holders
// share it.
type Statement struct {
	// ID is unique in the process and never reused, so a server connection
	// can cache statements by ID.
	ID uint64
	// Name is the statement's name on server connections (NamePrefix and
	// the ID in base 36).
	Name string
	// Body is the Parse body after the name: query text, NUL, parameter
	// type count and OIDs. Holders must not modify it.
	Body []byte

	hash uint64
	next *Statement // the next statement with the same hash
	refs int        // holders; guarded by Registry.mu
}

// Query returns the statement's query text.
func (s *Statement) Query() []byte {
	if i := bytes.IndexByte(s.Body, 0); i >= 0 {
		return s.Body[:i]
	}
	return s.Body
}

// Registry holds the statements clients have prepared, one per distinct
// content. It is safe for concurrent use. A statement stays registered
// while anyone holds it; once the last holder releases it, the same content
// prepared again gets a new ID (server connections that still have the old
// one keep it until their LRU evicts it: a stale entry costs a slot, never
// a wrong answer).
type Registry struct {
	hash func([]byte) uint64

	// mu guards the fields below and every Statement's refs. Nothing slow
	// runs under it: a map lookup, a comparison, at most one allocation.
	mu     sync.Mutex
	byHash map[uint64]*Statement // chains through Statement.next
	n      int
	lastID uint64
}

// NewRegistry returns an empty registry. hash finds candidate statements
// and may collide freely; nil means a seeded maphash, so that nobody can
// choose texts that collide on purpose to lengthen a chain.
func NewRegistry(hash func([]byte) uint64) *Registry {
	if hash == nil {
		seed := maphash.MakeSeed()
		hash = func(b []byte) uint64 { return maphash.Bytes(seed, b) }
	}
	return &Registry{hash: hash, byHash: make(map[uint64]*Statement)}
}

// Acquire returns the statement whose content is body, registering it (with
// a copy of body) if it is new, and counts the caller as a holder until it
// calls Release.
func (r *Registry) Acquire(body []byte) *Statement {
	h := r.hash(body)
	r.mu.Lock()
	defer r.mu.Unlock()
	head := r.byHash[h]
	for s := head; s != nil; s = s.next {
		if bytes.Equal(s.Body, body) {
			s.refs++
			return s
		}
	}
	r.lastID++
	s := &Statement{
		ID:   r.lastID,
		Name: NamePrefix + strconv.FormatUint(r.lastID, 36),
		Body: bytes.Clone(body),
		hash: h,
		next: head,
		refs: 1,
	}
	r.byHash[h] = s
	r.n++
	return s
}

// Release ends one holder's use of s; the last one's release unregisters
// it. Each Acquire is released once.
func (r *Registry) Release(s *Statement) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s.refs--
	if s.refs > 0 {
		return
	}
	var prev *Statement
	cur := r.byHash[s.hash]
	for cur != nil && cur != s {
		prev, cur = cur, cur.next
	}
	switch {
	case cur == nil:
		return // not registered: released more often than acquired
	case prev != nil:
		prev.next = s.next
	case s.next != nil:
		r.byHash[s.hash] = s.next
	default:
		delete(r.byHash, s.hash)
	}
	s.next = nil
	r.n--
}

// Len reports how many distinct statements are registered.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

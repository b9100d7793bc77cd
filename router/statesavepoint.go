// Savepoint statements among a client's pending SETs: looked at only
// while one waits (setsPending), and followed as the server runs them
// (savepointStatement).

package router

import (
	"github.com/pgferry/pgferry/router/classify"
)

// setsPending reports whether changes of the client wait for their
// transaction's end (pendingParams), for the session's owner, which takes
// mu for it only while setsSent says some may.
func (ss *session) setsPending() bool {
	r := ss.rare
	if r == nil || !r.setsSent {
		return false
	}
	ss.mu.Lock()
	n := len(r.tentative)
	ss.mu.Unlock()
	r.setsSent = n > 0
	return r.setsSent
}

// bindSavepoint classifies the client's statement name, bound while the
// client has SETs pending, if it is a savepoint statement (nil if not):
// its text is the one pgferry keeps for preparing it on other server
// connections (stmts.go), however long ago the client prepared it.
func (ss *session) bindSavepoint(name []byte) *classify.Class {
	var sql []byte
	ss.mu.Lock() // (a failed drop's answer puts names back: dropUndone)
	if len(name) == 0 {
		sql = ss.stmts.unnamedQuery()
	} else if st := ss.stmts.lookup(name); st != nil {
		sql = st.Query()
	}
	ss.mu.Unlock()
	if sql == nil || !classify.Savepoint(sql) || !ss.setsPending() {
		return nil
	}
	c := classify.SQL(sql)
	if c.Savepoint == 0 {
		return nil
	}
	return &c
}

// savepointStatement follows a savepoint statement the server ran while
// changes are pending, at position (seq, stmt): it reports false if
// pgferry recorded none there (a ROLLBACK it did not record, whose tag a
// ROLLBACK TO shares, is a whole transaction's). mu is held.
func (ss *session) savepointStatement(seq uint64, stmt int) bool {
	t := ss.rare.tentative
	at := -1
	for i := range t {
		if t[i].op != 0 && t[i].op != opSCS && !listenOp(t[i].op) && t[i].seq == seq && t[i].stmt == stmt {
			at = i
			break
		}
	}
	if at < 0 {
		return false
	}
	switch op := t[at].op; op {
	case classify.SavepointDefine:
		return true // its entry marks the savepoint
	case classify.SavepointRelease, classify.SavepointRollback:
		if op == classify.SavepointRollback {
			ss.scsUndone()
		}
		// The savepoint is the last one so named before: it and those
		// after it end (ROLLBACK TO keeps the savepoint itself). None
		// recorded: it came before every change pending, all of its
		// transaction.
		from := 0
		for i := at - 1; i >= 0; i-- {
			if t[i].op == classify.SavepointDefine && t[i].key == t[at].key {
				from = i
				if op == classify.SavepointRollback {
					from++
				}
				break
			}
		}
		i := -1
		ss.keepTentative(func(ch *paramChange) bool {
			i++
			switch {
			case i == at:
				return false
			case i >= at || i < from:
				if op == classify.SavepointRollback && i < from {
					ch.aborted = false // rescued from an error after the savepoint
				}
				return true
			case op == classify.SavepointRelease:
				return ch.op == 0 || listenOp(ch.op) // its changes stay, its savepoints go
			case listenOp(ch.op):
				ss.listenSettled(ch, false, 0) // rolled back (listenlinked.go)
			}
			return false // rolled back
		})
	}
	return true
}

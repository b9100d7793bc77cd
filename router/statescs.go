// standard_conforming_strings and the values of SETs: how pgferry reads
// a value for replay (setValue), and the setting a SET was read under
// when a change of it runs before it, unreported (scsAt).

package router

import (
	"strings"

	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/router/classify"
)

// scsName is the parameter whose setting decides how the values of SETs
// read (see setValue).
const scsName = "standard_conforming_strings"

// opSCS marks a pending change of standard_conforming_strings, a
// reported parameter, in tentative: the SETs after it read their values
// by it before the server reports it (scsAt). Its value is the setting.
const opSCS uint8 = 0x80

// scsPending reports whether a change of standard_conforming_strings
// the server has not reported yet may stand before a change recorded now:
// one pending (opSCS), or one that ran in the answers relayed so far,
// still unreported (scsLive). mu is held.
func (ss *session) scsPending() bool {
	r := ss.rare
	if r == nil {
		return false
	}
	if r.scsLive != "" {
		return true
	}
	for i := range r.tentative {
		if r.tentative[i].op == opSCS {
			return true
		}
	}
	return false
}

// scsAt follows, as the server answers the statement at position (seq,
// stmt), the setting of standard_conforming_strings the statements after
// it read by: that of a change of it that ran there (scsLive, which the
// ParameterStatus before the next ReadyForQuery reports: scsReported),
// and for a SET that ran there whose value reads otherwise under the
// other setting (alt), the reading of the setting in effect. mu is held.
func (ss *session) scsAt(sc *pool.ServerConn, seq uint64, stmt int) {
	r := ss.rare
	for i := range r.tentative {
		ch := &r.tentative[i]
		if ch.seq != seq || ch.stmt != stmt {
			continue
		}
		switch {
		case ch.op == opSCS:
			if r.scsSeq != seq {
				r.scsSeq, r.scsBefore = seq, r.scsLive
			}
			r.scsLive = "on"
			if offValue(ch.value) {
				r.scsLive = "off"
			}
		case ch.alt != "":
			live := r.scsLive
			if ch.query && r.scsSeq == seq {
				live = r.scsBefore // (read before its own changes ran)
			}
			if live == "" {
				live = "on"
				if v, ok := sc.Params[scsName]; ok && offValue(v) {
					live = "off"
				}
			}
			switch {
			case live == scsUnknown:
				ch.aborted = true // (which reading ran, pgferry cannot tell)
			case (live == "on") == ch.altOn:
				ch.value = ch.alt
			}
			ch.alt = ""
		}
	}
}

// scsUndone follows a ROLLBACK or ROLLBACK TO SAVEPOINT the server ran
// while changes of standard_conforming_strings are pending or unreported:
// it may have undone them, to a setting pgferry does not follow until the
// server reports it; a SET whose value reads otherwise under it is
// dropped meanwhile (scsAt). mu is held.
func (ss *session) scsUndone() {
	if ss.scsPending() {
		ss.rare.scsLive = scsUnknown
	}
}

// scsReported forgets scsLive once the server reported the setting
// (its ParameterStatus comes before ReadyForQuery). mu is held.
func (ss *session) scsReported() {
	if ss.rare != nil {
		ss.rare.scsLive, ss.rare.scsBefore, ss.rare.scsSeq = "", "", 0
	}
}

// scsUnknown is scsLive after a rollback of a change of
// standard_conforming_strings (scsUndone).
const scsUnknown = "?"

// setValue is the value of a client's SET as pgferry records it for
// replay (classify.PortableValue): SQL text that reads the same whatever
// standard_conforming_strings is on the server it is replayed on, read as
// the client's setting reads it now. ok is false for one it cannot record
// so. mu is held.
func (ss *session) setValue(v string) (string, bool) {
	return classify.PortableValue(v, ss.standardStrings())
}

// standardStrings reports whether standard_conforming_strings is on for
// the client, as the server last reported it. mu is held.
func (ss *session) standardStrings() bool {
	scs, ok := ss.params.lookup(scsName)
	if !ok {
		scs, ok = ss.entry.welcome[scsName]
	}
	return !ok || !offValue(scs)
}

// offValue reports whether v spells false as a PostgreSQL boolean setting
// does (parse_bool in src/backend/utils/adt/bool.c): off, or a prefix of
// false or no, or 0.
func offValue(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "off", "of", "f", "fa", "fal", "fals", "false", "n", "no", "0":
		return true
	}
	return false
}

// Statements about the transaction: ROLLBACK TO and the savepoint names
// (rollbackTo, savepointName, Savepoint), and those PostgreSQL runs in a
// failed transaction (EndsFailedTransaction).

package classify

// rollbackTo reports whether rest, what follows ROLLBACK, makes it a
// ROLLBACK TO SAVEPOINT: ROLLBACK [WORK | TRANSACTION] TO; after is what
// follows the TO.
func rollbackTo(rest []byte) (after []byte, ok bool) {
	w, r := nextWord(rest)
	if w == "work" || w == "transaction" {
		w, r = nextWord(r)
	}
	return r, w == "to"
}

// savepointName reads the name of a RELEASE or ROLLBACK TO, whose rest
// may begin with the noise word SAVEPOINT (itself a name when nothing
// follows it), as channelName reads one ("" if it cannot).
func savepointName(rest []byte) string {
	if w, r := nextWord(rest); w == "savepoint" && len(skipSpace(r)) > 0 {
		rest = r
	}
	return channelName(rest)
}

// Savepoint reports cheaply whether sql may be a savepoint statement
// (SAVEPOINT, RELEASE, ROLLBACK TO), by its first word: Needed passes
// over RELEASE and ROLLBACK, which matter only to a client with SETs
// pending (see Change.Savepoint), and that client asks this. It does not
// allocate.
func Savepoint(sql []byte) bool {
	b := skipSpace(sql)
	for _, w := range [...]string{"savepoint", "release", "rollback"} {
		if len(b) >= len(w) && lowerIs(b[:len(w)], w) && (len(b) == len(w) || identLower[b[len(w)]] == 0) {
			return true
		}
	}
	return false
}

// pinListenInSeveral is the pin reason of a LISTEN in a query of several
// statements: pgferry's listener serves a LISTEN that is a query of its
// own; in a query of several, the server runs it.
const pinListenInSeveral = "LISTEN in a query of several statements"

// EndsFailedTransaction reports whether sql begins with a statement that
// PostgreSQL runs in a failed transaction, where it refuses every other
// one with 25P02 (postgres.c, IsTransactionExitStmt): COMMIT, END,
// ROLLBACK, ABORT (ROLLBACK TO a savepoint too), PREPARE TRANSACTION;
// not COMMIT PREPARED nor ROLLBACK PREPARED. It does not allocate.
func EndsFailedTransaction(sql []byte) bool {
	w, rest := firstWord(sql)
	switch w {
	case "commit", "rollback":
		next, _ := firstWord(rest)
		return next != "prepared"
	case "end", "abort":
		return true
	case "prepare":
		return prepareTransaction(rest)
	}
	return false
}

// prepareTransaction reports whether rest, what follows PREPARE, is
// TRANSACTION and its transaction's name, not the name of a statement
// (PREPARE transaction AS ..., PREPARE transaction (int) AS ...: PostgreSQL
// prepares a statement named transaction).
func prepareTransaction(rest []byte) bool {
	next, r := firstWord(rest)
	if next != "transaction" {
		return false
	}
	r = skipSpace(r)
	if len(r) > 0 && r[0] == '(' {
		return false
	}
	return !(len(r) >= 2 && identLower[r[0]] == 'a' && identLower[r[1]] == 's' && (len(r) == 2 || identLower[r[2]] == 0))
}

// firstWord returns b's first word (after blanks and comments), lower
// case, if it is one of endWords, and the bytes after it; "" and b
// otherwise.
func firstWord(b []byte) (string, []byte) {
	b = skipSpace(b)
	var lb [11]byte
	i := 0
	for ; i < len(b); i++ {
		l := identLower[b[i]]
		if l == 0 {
			break
		}
		if i == len(lb) {
			return "", b
		}
		lb[i] = l
	}
	for _, w := range endWords {
		if string(lb[:i]) == w {
			return w, b[i:]
		}
	}
	return "", b
}

// endWords are the words EndsFailedTransaction looks for.
var endWords = [...]string{"commit", "rollback", "end", "abort", "prepare", "prepared", "transaction"}

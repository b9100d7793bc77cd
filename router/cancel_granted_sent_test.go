package router_test

import (
	"testing"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A CancelRequest for a statement that waited for a server connection,
// coming after the session took the server it was granted and before the
// statement went to it (the fault point "granted", where the test sends
// it), cancels the statement once it runs, as PostgreSQL cancels an
// INSERT waiting for a lock: 57014, the INSERT never commits, the session
// goes on. It was dropped, the session having a server and nothing sent
// to it yet (forwardCancel: nothing running), and the INSERT ran.
func TestACancelThatComesAsAGrantedStatementIsAboutToBeSentCancelsIt(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	cancelAtFault(t, "granted", true)
}

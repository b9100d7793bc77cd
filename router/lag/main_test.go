package lag

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/pgferry/pgferry/internal/pgtest"
)

// primary and replica are the streaming pair shared by this package's tests,
// started by TestMain. Tests that stop, pause or promote a server restore it
// in t.Cleanup, except the promotion test, which makes its own pair.
var primary, replica *pgtest.Cluster

func TestMain(m *testing.M) {
	flag.Parse()
	if pgtest.FuzzWorker() {
		// Fuzz workers run only the fuzz function: no cluster needed.
		os.Exit(m.Run())
	}
	p, err := pgtest.Start(pgtest.Options{Replication: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start primary:", err)
		os.Exit(1)
	}
	r, err := p.StartReplica(pgtest.Options{})
	if err != nil {
		p.Stop()
		fmt.Fprintln(os.Stderr, "start replica:", err)
		os.Exit(1)
	}
	primary, replica = p, r
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		p.Stop() // stops the replica too
		os.Exit(code)
	}))
}

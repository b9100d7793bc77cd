package notify_test

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/pgferry/pgferry/internal/pgtest"
)

// cluster is the PostgreSQL server this package's tests listen on, started
// by TestMain; each test has a database of its own.
var cluster *pgtest.Cluster

func TestMain(m *testing.M) {
	flag.Parse()
	c, err := pgtest.Start(pgtest.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start cluster:", err)
		os.Exit(1)
	}
	cluster = c
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		c.Stop()
		os.Exit(code)
	}))
}

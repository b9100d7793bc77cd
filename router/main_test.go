package router_test

import (
	"context"
	"flag"
	"os"
	"runtime"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/internal/pgtest"
)

var cluster *pgtest.Cluster

// parallelAtLeast is how many tests at a time run by default: the
// end-to-end tests mostly wait (on PostgreSQL, on pgferry's timers and
// sweeps) rather than compute, so more of them than the CPU count (go
// test's default -parallel) keep the run short. An explicit -parallel wins.
const parallelAtLeast = 4

func TestMain(m *testing.M) {
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit && runtime.GOMAXPROCS(0) < parallelAtLeast {
		flag.Set("test.parallel", strconv.Itoa(parallelAtLeast))
	}
	if pgtest.FuzzWorker() {
		// Fuzz workers run only the fuzz function: no cluster needed.
		os.Exit(m.Run())
	}
	c, err := pgtest.Start(pgtest.Options{TLS: true})
	if err != nil {
		println("start postgres:", err.Error())
		os.Exit(1)
	}
	cluster = c
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) { c.Stop(); os.Exit(code) }))
}

func TestSmokeSimpleQueryThroughPgferry(t *testing.T) {
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	conn, err := pgx.Connect(context.Background(), f.AppDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(context.Background(), "select 40+2").Scan(&n); err != nil || n != 42 {
		t.Fatalf("got %d, %v", n, err)
	}
}

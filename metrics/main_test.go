package metrics_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/pgferry/pgferry/internal/pgtest"
)

var cluster *pgtest.Cluster

func TestMain(m *testing.M) {
	c, err := pgtest.Start(pgtest.Options{})
	if err != nil {
		println("start postgres:", err.Error())
		os.Exit(1)
	}
	cluster = c
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) { c.Stop(); os.Exit(code) }))
}

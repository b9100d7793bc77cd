// Package pgtest starts throwaway, real PostgreSQL 15 clusters for tests: a
// primary (optionally with TLS and replication enabled) and streaming
// replicas made with pg_basebackup -R, each in its own temporary directories
// on a free 127.0.0.1 port, with helpers to connect, run SQL, create a
// database per test, add pg_hba.conf lines and read the server log.
//
// The intended use is one cluster per test package, owned by TestMain, and one
// database per test (Cluster.CreateDatabase):
//
//	var cluster *pgtest.Cluster
//
//	func TestMain(m *testing.M) {
//		c, err := pgtest.Start(pgtest.Options{})
//		if err != nil {
//			fmt.Fprintln(os.Stderr, err)
//			os.Exit(1)
//		}
//		cluster = c
//		goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
//			c.Stop()
//			os.Exit(code)
//		}))
//	}
//
// A missing PostgreSQL binary is an error, never a skip: the house style
// (docs/house-style.md 2.6) wants tests to run against real servers on every
// machine, CI included. Binaries are taken from /usr/lib/postgresql/15/bin
// (Debian's layout) and otherwise from PATH.
//
// PostgreSQL refuses to run as root, so when the test binary runs as root
// every server-side program (initdb, pg_ctl, pg_basebackup) runs as the
// "postgres" OS user and the temporary directories are chowned to it.
//
// Clusters are tuned for speed, not durability (fsync=off, small
// shared_buffers) and listen only on 127.0.0.1 and a private unix socket
// directory. Host connections use SCRAM-SHA-256; local (unix socket)
// connections are trusted.
//
// This package is test support only: nothing outside _test.go files and other
// test harness packages may import it (the demo uses internal/localpg, which
// this package re-exports). It imports no other pgferry package, so every
// package can use it in its tests.
package pgtest

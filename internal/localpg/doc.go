// Package localpg starts throwaway, real PostgreSQL 15 clusters on this
// machine: a primary (optionally with TLS and replication enabled) and
// streaming replicas made with pg_basebackup -R, each in its own temporary
// directories on a free 127.0.0.1 port, with helpers to connect, run SQL,
// create a database, add pg_hba.conf lines and read the server log.
//
// Two users: pgferry's demo (`go run ./cmd/pgferry` with no config), which
// must not link the test harness, and the test harness internal/pgtest,
// which re-exports this package for tests. It imports neither testing nor
// any pgferry package.
//
// Binaries are taken from /usr/lib/postgresql/15/bin (Debian's layout) and
// otherwise from PATH. PostgreSQL refuses to run as root, so when the
// process runs as root every server-side program (initdb, pg_ctl,
// pg_basebackup) runs as the "postgres" OS user and the temporary
// directories are chowned to it.
//
// Clusters are tuned for speed, not durability (fsync=off, small
// shared_buffers) and listen only on 127.0.0.1 and a private unix socket
// directory. Host connections use SCRAM-SHA-256; local (unix socket)
// connections are trusted. Tests start theirs from a data directory initdb
// made once (Options.FromTemplate, template.go).
package localpg

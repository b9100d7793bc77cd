// Package hba parses and evaluates an auth_hba_file: the subset of
// PostgreSQL's pg_hba.conf that PgBouncer accepts (PgBouncer src/hba.c,
// doc/config.md "HBA file format").
//
// [Parse] and [Load] turn the file into [Rules]; [Rules.Match] finds the
// first rule that applies to a connection. Where PgBouncer logs a warning
// and skips a line it cannot use, this package refuses the whole file with
// a [ParseError] naming file and line, so that a rule meant to restrict
// logins is never silently dropped.
//
// Package hba does no I/O besides reading the file and the @file includes
// it names, does not log, and must not import pool, router, metrics or cmd.
package hba

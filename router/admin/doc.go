// Package admin is pgferry's admin console: PgBouncer's virtual database
// "pgbouncer" (pgferry also answers to "pgferry"), a simple-Query-only
// pseudo server whose commands show and control the pooler
// (docs/pgbouncer-reference.md section 10).
//
// A client reaches the console after login like any database; package
// router admits it and hands its connection's Reader and Writer to a
// Console, which greets the client, reads its commands, answers the SHOW
// lists (RowDescription and DataRows, with PgBouncer 1.25.2's column
// names, order and types, then pgferry's own) and runs the control
// commands. Texts and SQLSTATEs of its errors are PgBouncer's (1.18 and
// 1.25.2 alike), so scripts and exporters written
// against PgBouncer keep working; in particular "admin access needed" is
// 08P01 (protocol_violation), which is what PgBouncer really sends, not
// 42501.
//
// One file per command family: console.go (the frame loop, parsing,
// dispatch, errors), control.go (PAUSE, RESUME, RECONNECT, KILL,
// KILL_CLIENT, WAIT_CLOSE, RELOAD, SHUTDOWN), pausestate.go (what PAUSE
// and KILL paused, shared by the console's sessions), show.go (the SHOW
// dispatch, column lists and encoding), show_config.go (CONFIG, DATABASES, USERS,
// PEERS), show_pools.go (POOLS, LISTS, STATE, REPLICAS), show_stats.go
// (STATS, STATS_TOTALS, STATS_AVERAGES, TOTALS) and show_sockets.go
// (CLIENTS, SERVERS).
//
// The console sees the pooler only through the small interfaces of
// backend.go, which package router implements: Backend (plain snapshots of
// pools and sockets, and the control actions) and Session (the state of
// the session that owns the console's client connection). Package admin
// must not import router; router imports it.
package admin

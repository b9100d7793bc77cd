// Package pool owns pgferry's server connections: one Pool per (database,
// user) dials PostgreSQL, logs in, lends connections to client sessions and
// takes them back, enforces the size limits, queues waiters FIFO and retires
// connections by age or idleness.
//
// A Pool never chooses a backend (the router does) and never imports
// prometheus: Stat returns snapshots and Hooks carries distributions.
//
// Ownership: the Pool owns every ServerConn. Acquire lends one; the borrower
// ends the loan exactly once, with Release when the connection is idle and
// clean, or Destroy when its state is unknown.
package pool

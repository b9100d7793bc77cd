// Package router owns client sessions: it accepts connections, runs the
// startup and authentication exchange, tracks each client's transactions,
// lends it a server connection from the right pool for each transaction (or
// for the whole session) and relays frames between the two.
//
// The relay forwards frames as bytes. It decodes only what it must act on:
// ReadyForQuery status, ParameterStatus, the statement names in
// Parse/Bind/Describe/Close, and the first words of a Query to spot session
// state that cannot follow a client across server connections.
//
// router uses configs values but never parses configuration files.
package router

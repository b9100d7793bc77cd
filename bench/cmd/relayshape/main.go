//go:build linux

// Command relayshape measures how much an event-loop relay (a few loops,
// one per core, each owning many sessions' sockets through epoll) saves in
// Go against a goroutine per session, before pgferry's relay is rewritten.
//
// It has two subcommands:
//
//	relayshape serve -shape copy|inline|loop|loop-raw[-gonet|-gonet-all|-rawdial]|loop-netpoll -server 127.0.0.1:5432
//	relayshape run [-rounds 3] [-shapes copy,inline,loop,...]
//
// serve runs one minimal 1:1 relay (every client gets its own new server
// connection; bytes are forwarded, nothing is pooled) in the given shape and
// prints "listening ADDR" once it accepts. run starts a throwaway
// PostgreSQL 15 cluster, runs every shape as its own process and measures
// instructions per transaction under callgrind, TPS and relay CPU per 1,000
// transactions, then prints one markdown table. See README.md.
//
// This is an experiment, not a product: the relays skip everything a
// pooler does besides forwarding, and this package is imported by nothing.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: relayshape serve|run [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serveMain(os.Args[2:])
	case "run":
		err = runMain(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "relayshape: unknown subcommand %q (serve or run)\n", os.Args[1])
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "relayshape:", err)
		os.Exit(1)
	}
}

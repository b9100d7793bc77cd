//go:build linux

package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
)

func serveMain(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	shape := fs.String("shape", "inline", "relay shape: copy, inline, loop, loop-raw, loop-raw-gonet, loop-raw-gonet-all, loop-raw-rawdial, loop-netpoll")
	listen := fs.String("listen", "127.0.0.1:0", "address to accept clients on")
	server := fs.String("server", "", "PostgreSQL address (host:port)")
	loops := fs.Int("loops", runtime.GOMAXPROCS(0), "event loops, for the loop shapes")
	_ = fs.Parse(args)
	if *server == "" {
		return errors.New("serve: -server is required")
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	defer ln.Close()

	var session func(clientConn net.Conn, serverAddr string)
	switch *shape {
	case "copy":
		session = copySession
	case "inline":
		session = inlineSession
	case "loop", "loop-raw", "loop-raw-gonet", "loop-raw-gonet-all", "loop-raw-rawdial", "loop-netpoll":
		// The loop-raw-* shapes are loop-raw with the server sockets (and,
		// for -all, the client sockets) left in Go's netpoller, or dialed
		// without the net package.
		how := sockets{
			keepServer: *shape == "loop-raw-gonet" || *shape == "loop-raw-gonet-all",
			keepClient: *shape == "loop-raw-gonet-all",
			rawDial:    *shape == "loop-raw-rawdial",
		}
		raw := strings.HasPrefix(*shape, "loop-raw")
		ls, err := startLoops(*loops, raw, *shape == "loop-netpoll")
		if err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		fmt.Printf("listening %s\n", ln.Addr())
		return acceptToLoops(ln, *server, ls, how)
	default:
		return fmt.Errorf("serve: unknown shape %q", *shape)
	}
	fmt.Printf("listening %s\n", ln.Addr())
	// The process is killed when the driver is done with it, so sessions
	// are not tracked for a graceful shutdown.
	for {
		c, err := ln.Accept()
		if err != nil {
			return fmt.Errorf("accept: %w", err)
		}
		go session(c, *server)
	}
}

// copySession is the naive Go proxy: one goroutine per direction, each a
// plain read/write loop on a 16 KiB buffer. It owns clientConn.
//
// The loops use Read and Write, not io.Copy: io.Copy between two TCP
// connections splices in the kernel, which is not what a PostgreSQL relay
// that looks at messages can do.
func copySession(clientConn net.Conn, serverAddr string) {
	defer clientConn.Close()
	serverConn, err := net.Dial("tcp", serverAddr)
	if err != nil {
		return
	}
	defer serverConn.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		pump(clientConn, serverConn)
		clientConn.Close() // ends the other direction's Read
	}()
	pump(serverConn, clientConn)
	serverConn.Close()
	<-done
}

func pump(dst, src net.Conn) {
	buf := make([]byte, 16<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// bufSize is the read and write buffer size of the inline shape: 8 KiB,
// PostgreSQL's own socket buffer (PQ_RECV_BUFFER_SIZE in
// src/backend/libpq/pqcomm.c).
const bufSize = 8 << 10

// Protocol codes of the untyped packets a client may send first
// (PostgreSQL docs, "Message Formats": CancelRequest, SSLRequest,
// GSSENCRequest).
const (
	cancelRequestCode = 80877102
	sslRequestCode    = 80877103
	gssEncRequestCode = 80877104
)

var errBadFrame = errors.New("bad frame length")

// frameWriter batches whole frames into one Write.
type frameWriter struct {
	conn net.Conn
	buf  []byte
}

func (w *frameWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	_, err := w.conn.Write(w.buf)
	w.buf = w.buf[:0]
	return err
}

// copyFrame forwards one frame from r to w: a typed frame (type byte,
// int32 length) or, with typed false, a startup-phase packet (int32
// length, int32 code). It returns the type byte and the frame's first four
// body bytes as code (the Authentication request's kind, the startup
// packet's protocol code; 0 if the body is shorter). It flushes w before
// any read that could block, so nothing buffered waits for more input.
// Frames larger than r's buffer are streamed straight through.
func copyFrame(r *bufio.Reader, w *frameWriter, typed bool) (typ byte, code uint32, err error) {
	hdr := 4
	if typed {
		hdr = 5
	}
	if r.Buffered() < hdr {
		if err = w.flush(); err != nil {
			return 0, 0, err
		}
	}
	b, err := r.Peek(hdr)
	if err != nil {
		return 0, 0, err
	}
	n := int(binary.BigEndian.Uint32(b[hdr-4:])) + hdr - 4
	if typed {
		typ = b[0]
	}
	if n < hdr {
		return 0, 0, errBadFrame
	}
	if n <= r.Size() {
		if r.Buffered() < n {
			if err = w.flush(); err != nil {
				return 0, 0, err
			}
		}
		if b, err = r.Peek(n); err != nil {
			return 0, 0, err
		}
		if n >= hdr+4 {
			code = binary.BigEndian.Uint32(b[hdr:])
		}
		w.buf = append(w.buf, b...)
		_, _ = r.Discard(n)
		if len(w.buf) >= bufSize {
			err = w.flush()
		}
		return typ, code, err
	}
	if err = w.flush(); err != nil {
		return 0, 0, err
	}
	if b, err = r.Peek(hdr + 4); err != nil {
		return 0, 0, err
	}
	code = binary.BigEndian.Uint32(b[hdr:])
	_, err = io.CopyN(w.conn, r, int64(n))
	return typ, code, err
}

// inlineSession is pgferry's hot path in miniature: one goroutine reads
// client frames and writes them to the server; after a frame that expects
// an answer (Query, Sync) it reads server frames and forwards them until
// ReadyForQuery, then goes back to the client. It owns clientConn.
//
// Like pgferry it does not read the client while a query runs, so COPY
// FROM STDIN and Flush-without-Sync are not supported (pgbench -S does not
// use them).
func inlineSession(clientConn net.Conn, serverAddr string) {
	defer clientConn.Close()
	serverConn, err := net.Dial("tcp", serverAddr)
	if err != nil {
		return
	}
	defer serverConn.Close()
	cr := bufio.NewReaderSize(clientConn, bufSize)
	sr := bufio.NewReaderSize(serverConn, bufSize)
	cw := &frameWriter{conn: clientConn, buf: make([]byte, 0, bufSize)}
	sw := &frameWriter{conn: serverConn, buf: make([]byte, 0, bufSize)}
	if err := startup(cr, sr, cw, sw); err != nil {
		return
	}
	for {
		typ, _, err := copyFrame(cr, sw, true)
		if err != nil {
			return
		}
		switch typ {
		case 'X': // Terminate
			_ = sw.flush()
			return
		case 'Q', 'S':
			if err := sw.flush(); err != nil {
				return
			}
			if err := relayUntilReady(sr, cw); err != nil {
				return
			}
		}
	}
}

// relayUntilReady forwards server frames to the client up to and including
// ReadyForQuery.
func relayUntilReady(sr *bufio.Reader, cw *frameWriter) error {
	for {
		typ, _, err := copyFrame(sr, cw, true)
		if err != nil {
			return err
		}
		if typ == 'Z' {
			return cw.flush()
		}
	}
}

// startup forwards the startup phase: SSL/GSS negotiation (refused by the
// server, which runs without TLS here), the startup packet, any
// authentication exchange, and the server's answers up to its first
// ReadyForQuery.
func startup(cr, sr *bufio.Reader, cw, sw *frameWriter) error {
	for {
		_, code, err := copyFrame(cr, sw, false)
		if err != nil {
			return err
		}
		if err := sw.flush(); err != nil {
			return err
		}
		if code == cancelRequestCode {
			return io.EOF // the server acts on it and closes
		}
		if code != sslRequestCode && code != gssEncRequestCode {
			break
		}
		b, err := sr.ReadByte()
		if err != nil {
			return err
		}
		cw.buf = append(cw.buf, b)
		if err := cw.flush(); err != nil {
			return err
		}
		if b != 'N' {
			return errors.New("server accepted encryption; not relayed")
		}
	}
	for {
		typ, code, err := copyFrame(sr, cw, true)
		if err != nil {
			return err
		}
		switch {
		case typ == 'Z':
			return cw.flush()
		case typ == 'E':
			_ = cw.flush()
			return errors.New("server refused the login")
		case typ == 'R' && (code == 3 || code == 5 || code == 10 || code == 11):
			// Cleartext, MD5, SASL and SASLContinue want a client answer.
			if err := cw.flush(); err != nil {
				return err
			}
			if _, _, err := copyFrame(cr, sw, true); err != nil {
				return err
			}
			if err := sw.flush(); err != nil {
				return err
			}
		}
	}
}

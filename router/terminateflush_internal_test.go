package router

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
)

// A client idle on its server (session mode, or pinned) that writes a Flush
// and a Terminate together leaves the Flush held back in the server's write
// buffer (flushServerIfIdle: more of the client's frames were buffered) when
// the Terminate ends the session. finish sends it under a one-second write
// deadline; the server is clean (a Flush expects no answer), so it goes
// back to the pool, and must go without that deadline: once the second
// passed, it would fail the next client's first write. The deadlines are
// recorded on the server's net.Conn (a loopback socket to a stand-in for
// PostgreSQL, the only part faked: a real server could not be reached from
// this package's internal tests), rather than waited out.
func TestAServerConnectionFlushedAtTheClientsTerminateGoesBackToThePoolWithoutAWriteDeadline(t *testing.T) {
	tests := []struct {
		name       string
		txnMode    bool
		pinned     bool
		resetQuery string // "" releases the server as it is; otherwise resetServer runs it first
	}{
		{name: "session mode without a reset query"},
		{name: "a client pinned in transaction mode without a reset query", txnMode: true, pinned: true},
		{name: "session mode with a reset query", resetQuery: "DISCARD ALL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, addr := idleServer(t)
			p, sc := lentRecordingDeadlines(t, addr)
			rec := sc.Conn.(*deadlineConn)

			cfg := configs.Default()
			cfg.ServerResetQuery = tc.resetQuery
			srv := &Server{log: zap.NewNop()}
			srv.cfg.Store(cfg)
			// The session as its first query left it: linked, the server idle.
			ss := &session{srv: srv, entry: &poolEntry{pool: p}, txnMode: tc.txnMode, pinned: tc.pinned,
				server: sc, status: protocol.TxIdle, fd: -1}
			ss.rd = protocol.NewReader(bytes.NewReader(protocol.AppendTerminate(protocol.AppendEmpty(nil, protocol.MsgFlush))))
			ss.wr = protocol.NewWriter(io.Discard)

			// As serve does: peek a frame, handle it.
			typ, size, err := ss.rd.Peek()
			if err != nil || typ != protocol.MsgFlush {
				t.Fatalf("the client's first frame: %q, %v; want its Flush", typ, err)
			}
			if err := ss.handle(typ, size); err != nil {
				t.Fatalf("handling the Flush: %v", err)
			}
			if sc.Wr.Len() == 0 {
				t.Fatal("the Flush went to the server at once; want it held back, the Terminate being buffered behind it")
			}
			typ, size, err = ss.rd.Peek()
			if err != nil || typ != protocol.MsgTerminate {
				t.Fatalf("the client's second frame: %q, %v; want its Terminate", typ, err)
			}
			err = ss.handle(typ, size)
			if !errors.Is(err, errClientTerminated) {
				t.Fatalf("handling the Terminate returned %v; want errClientTerminated", err)
			}
			ss.finish(err)

			want := []byte{protocol.MsgFlush}
			if tc.resetQuery != "" {
				want = append(want, protocol.MsgQuery)
			}
			for _, w := range want {
				select {
				case typ := <-got:
					if typ != w {
						t.Fatalf("the server received %q; want %q", typ, w)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("the server never received %q", w)
				}
			}
			if s := p.Stat(); s.Idle != 1 || s.Destroyed != 0 {
				t.Fatalf("after the session ended the pool has %d idle connections and destroyed %d; want the clean server back, idle", s.Idle, s.Destroyed)
			}
			set := rec.writeDeadlines()
			bounded := false
			for _, d := range set {
				bounded = bounded || !d.IsZero()
			}
			if !bounded {
				t.Fatalf("write deadlines set on the server: %v; want the held Flush sent under one", set)
			}
			if last := set[len(set)-1]; !last.IsZero() {
				t.Fatalf("the server went back to the pool with a write deadline of %v (deadlines set: %v); want none", last, set)
			}
		})
	}
}

// A held Flush whose write fails (the deadline passed, the connection
// broke) may have left part of a frame on the server, and the Writer,
// emptied by the failure, no longer says anything is pending: the server
// is destroyed, not pooled.
func TestAServerConnectionWhoseFlushAtTheClientsTerminateFailsIsDestroyed(t *testing.T) {
	_, addr := idleServer(t)
	p, sc := lentRecordingDeadlines(t, addr)
	srv := &Server{log: zap.NewNop()}
	cfg := configs.Default()
	cfg.ServerResetQuery = ""
	srv.cfg.Store(cfg)
	ss := &session{srv: srv, entry: &poolEntry{pool: p}, server: sc, status: protocol.TxIdle, fd: -1}
	ss.rd = protocol.NewReader(bytes.NewReader(protocol.AppendTerminate(protocol.AppendEmpty(nil, protocol.MsgFlush))))
	ss.wr = protocol.NewWriter(io.Discard)
	for _, want := range []byte{protocol.MsgFlush, protocol.MsgTerminate} {
		typ, size, err := ss.rd.Peek()
		if err != nil || typ != want {
			t.Fatalf("the client's frame: %q, %v; want %q", typ, err, want)
		}
		err = ss.handle(typ, size)
		if want == protocol.MsgTerminate {
			sc.Conn.(*deadlineConn).failWrites(os.ErrDeadlineExceeded)
			ss.finish(err)
		} else if err != nil {
			t.Fatalf("handling the Flush: %v", err)
		}
	}
	if s := p.Stat(); s.Idle != 0 || s.Destroyed != 1 {
		t.Fatalf("after a failed flush the pool has %d idle connections and destroyed %d; want the server destroyed", s.Idle, s.Destroyed)
	}
}

// lentRecordingDeadlines makes a pool of one connection to addr, whose
// net.Conn is a deadlineConn (its writes too), and lends it.
func lentRecordingDeadlines(t *testing.T, addr string) (*pool.Pool, *pool.ServerConn) {
	t.Helper()
	p := pool.New(pool.Config{
		Database: "app", User: "app", Size: 1,
		Dial: pool.DialConfig{Hosts: []string{addr}, Database: "app", User: "app", SSLMode: pool.SSLDisable, ConnectTimeout: 10 * time.Second},
		DialFunc: func(ctx context.Context, cfg *pool.DialConfig) (*pool.ServerConn, error) {
			sc, err := pool.Dial(ctx, cfg)
			if err == nil {
				sc.Conn = &deadlineConn{Conn: sc.Conn}
				if sc.Wr != nil {
					sc.Wr.SetDest(sc.Conn)
				}
			}
			return sc, err
		},
	})
	t.Cleanup(p.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sc, err := p.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return p, sc
}

// deadlineConn records the write deadlines set on a server connection,
// by SetWriteDeadline or SetDeadline, and fails its writes once told to.
type deadlineConn struct {
	net.Conn
	mu      sync.Mutex
	write   []time.Time // guarded by mu, in the order set
	failing error       // guarded by mu: what every Write returns, if set
}

func (c *deadlineConn) failWrites(err error) {
	c.mu.Lock()
	c.failing = err
	c.mu.Unlock()
}

func (c *deadlineConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	err := c.failing
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

func (c *deadlineConn) SetDeadline(t time.Time) error {
	c.note(t)
	return c.Conn.SetDeadline(t)
}

func (c *deadlineConn) SetWriteDeadline(t time.Time) error {
	c.note(t)
	return c.Conn.SetWriteDeadline(t)
}

func (c *deadlineConn) note(t time.Time) {
	c.mu.Lock()
	c.write = append(c.write, t)
	c.mu.Unlock()
}

func (c *deadlineConn) writeDeadlines() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Time(nil), c.write...)
}

// idleServer stands in for PostgreSQL on a loopback port, for one
// connection: it lets the login in, answers every simple query with
// CommandComplete and ReadyForQuery 'I', sends the type of every frame it
// receives after the login to got, and closes the connection at Terminate
// or end of file. The test's cleanup waits for it.
func idleServer(t *testing.T) (got <-chan byte, addr string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	frames := make(chan byte, 16)
	done := make(chan struct{})
	t.Cleanup(func() {
		l.Close()
		<-done
	})
	go func() {
		defer close(done)
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if _, err := protocol.ReadStartup(c); err != nil {
			return
		}
		var b []byte
		b = protocol.AppendAuthentication(b, 0, nil) // AuthenticationOk
		b = protocol.AppendBackendKeyData(b, 1, 2)
		b = protocol.AppendReadyForQuery(b, protocol.TxIdle)
		if _, err := c.Write(b); err != nil {
			return
		}
		var hdr [5]byte
		for {
			if _, err := io.ReadFull(c, hdr[:]); err != nil {
				return
			}
			if _, err := io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint32(hdr[1:]))-4); err != nil {
				return
			}
			if hdr[0] == protocol.MsgTerminate {
				return
			}
			frames <- hdr[0]
			if hdr[0] == protocol.MsgQuery {
				b = protocol.AppendCommandComplete(b[:0], "DISCARD ALL")
				b = protocol.AppendReadyForQuery(b, protocol.TxIdle)
				if _, err := c.Write(b); err != nil {
					return
				}
			}
		}
	}()
	return frames, l.Addr().String()
}

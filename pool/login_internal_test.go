package pool

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pgferry/pgferry/protocol"
)

// lateDeadlineConn is a client's end of a login whose context ends as the
// server's last answer is read: the past deadline the context's end sets
// (login's AfterFunc) waits until the test says the login returned.
type lateDeadlineConn struct {
	net.Conn
	cancel   context.CancelFunc
	returned chan struct{} // closed by the test once login returned
	pastSet  chan struct{} // closed once the past deadline is set

	mu   sync.Mutex
	read int
	last time.Time
}

func (c *lateDeadlineConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.mu.Lock()
	c.read += n
	done := c.read >= loginAnswerLen
	c.mu.Unlock()
	if done {
		c.cancel() // the dial's time runs out (or its pool closes) just now
	}
	return n, err
}

func (c *lateDeadlineConn) SetDeadline(t time.Time) error {
	past := !t.IsZero() && t.Before(time.Now())
	if past {
		<-c.returned
	}
	c.mu.Lock()
	c.last = t
	c.mu.Unlock()
	if past {
		close(c.pastSet)
	}
	return nil
}

var loginAnswer = protocol.AppendReadyForQuery(protocol.AppendAuthentication(nil, 0, nil), 'I')

var loginAnswerLen = len(loginAnswer)

func TestALoginWhoseTimeRunsOutAsItEndsLeavesNoPastDeadlineOnAConnectionItReturns(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	go func() {
		defer server.Close()
		// The startup message, then AuthenticationOk and ReadyForQuery.
		var n [4]byte
		if _, err := io.ReadFull(server, n[:]); err != nil {
			return
		}
		size := int(n[0])<<24 | int(n[1])<<16 | int(n[2])<<8 | int(n[3])
		if _, err := io.CopyN(io.Discard, server, int64(size-4)); err != nil {
			return
		}
		server.Write(loginAnswer)
		io.Copy(io.Discard, server)
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := &lateDeadlineConn{Conn: client, cancel: cancel, returned: make(chan struct{}), pastSet: make(chan struct{})}
	cfg := &DialConfig{Database: "app", User: "app", SSLMode: SSLDisable}
	sc, err := login(ctx, cfg, "db", "db:5432", c)
	close(c.returned)
	select {
	case <-c.pastSet:
	case <-time.After(20 * time.Second): // a hang guard
		t.Fatal("the context's end set no deadline")
	}
	if err != nil {
		return // the login ran out of time: nothing is lent
	}
	sc.Rd.Release()
	c.mu.Lock()
	last := c.last
	c.mu.Unlock()
	if !last.IsZero() {
		t.Fatalf("login returned a connection whose read deadline is %v: its first borrower's read fails at once", last)
	}
}

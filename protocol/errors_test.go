package protocol_test

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/pgferry/pgferry/protocol"
)

func TestAPeerThatResetsOrClosesIsADisconnectButATimeoutIsNot(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pair := func() (net.Conn, *net.TCPConn) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		return c, s.(*net.TCPConn)
	}
	buf := make([]byte, 8)

	c, s := pair()
	s.SetLinger(0) // close sends a reset
	s.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(buf); !protocol.IsDisconnect(err) {
		t.Errorf("reading after the peer's reset: %v is not a disconnect", err)
	}
	c.Close()

	c, s = pair()
	s.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(buf); !protocol.IsDisconnect(err) {
		t.Errorf("reading after the peer's close: %v is not a disconnect", err)
	}
	c.Close()
	if _, err := c.Read(buf); !protocol.IsDisconnect(err) {
		t.Errorf("reading a closed connection: %v is not a disconnect", err)
	}

	c, s = pair()
	defer c.Close()
	defer s.Close()
	c.SetReadDeadline(time.Now().Add(time.Millisecond))
	if _, err := c.Read(buf); err == nil || protocol.IsDisconnect(err) {
		t.Errorf("a read timeout (%v) counts as a disconnect", err)
	}
	if protocol.IsDisconnect(errors.New("connection reset by a typo")) {
		t.Error("an error is a disconnect because of its text")
	}
}

func TestRenameInErrorNamesAnotherStatementInTheMessageAlone(t *testing.T) {
	e := protocol.NewError("42P05", `prepared statement "pgferry_duplicate" already exists`)
	e.Detail = `pgferry_duplicate`
	got := protocol.RenameInError([]byte("x"), e.AppendFrame(nil), "pgferry_duplicate", "s1")
	want := protocol.NewError("42P05", `prepared statement "s1" already exists`)
	want.Detail = `pgferry_duplicate`
	if string(got) != "x"+string(want.AppendFrame(nil)) {
		t.Fatalf("got %q, want %q", got, want.AppendFrame(nil))
	}
}

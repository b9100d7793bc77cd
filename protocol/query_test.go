package protocol

import (
	"bytes"
	"errors"
	"net"
	"testing"
)

// scriptedServer answers one simple Query with reply on the far end of a
// pipe and returns the query text it received.
func scriptedServer(t *testing.T, reply []byte) (client net.Conn, query <-chan string) {
	t.Helper()
	c, s := net.Pipe()
	t.Cleanup(func() { c.Close(); s.Close() })
	got := make(chan string, 1)
	go func() {
		rd := NewReader(s)
		frame, err := rd.Next()
		if err != nil {
			got <- "read error: " + err.Error()
			return
		}
		got <- string(Body(frame)[:len(Body(frame))-1])
		s.Write(reply)
	}()
	return c, got
}

func TestExecReadsTheReplyThroughReadyForQueryAndHandsOnRows(t *testing.T) {
	var reply []byte
	reply = AppendParameterStatus(reply, "search_path", "x")
	reply = AppendDataRow(reply, []byte("1"), nil)
	reply = AppendDataRow(reply, []byte("2"), []byte(""))
	reply = AppendCommandComplete(reply, "SELECT 2")
	reply = AppendReadyForQuery(reply, TxIdle)
	c, query := scriptedServer(t, reply)
	var seen []string
	status, err := Exec(NewReader(c), NewWriter(c), "select a, b from t", func(typ byte, frame []byte) error {
		if typ == MsgDataRow {
			cols, err := ParseDataRow(Body(frame), nil)
			if err != nil {
				return err
			}
			seen = append(seen, string(cols[0].Value))
			if !cols[1].Null && cols[1].Value == nil {
				t.Errorf("an empty value came back as nil")
			}
			return nil
		}
		seen = append(seen, string(typ))
		return nil
	})
	if err != nil || status != TxIdle {
		t.Fatalf("Exec = %q, %v", status, err)
	}
	if q := <-query; q != "select a, b from t" {
		t.Errorf("server received %q", q)
	}
	if got := string(bytes.Join(func() (b [][]byte) {
		for _, s := range seen {
			b = append(b, []byte(s))
		}
		return
	}(), []byte(" "))); got != "S 1 2 C" {
		t.Errorf("messages handed on: %q", got)
	}
}

func TestExecReturnsTheServersErrorOnceTheConnectionIsIdleAgain(t *testing.T) {
	var reply []byte
	reply = NewError("42P01", `relation "t" does not exist`).AppendFrame(reply)
	reply = AppendReadyForQuery(reply, TxFailed)
	c, _ := scriptedServer(t, reply)
	rd := NewReader(c)
	status, err := Exec(rd, NewWriter(c), "select * from t", nil)
	var se *ServerError
	if !errors.As(err, &se) || se.Code != "42P01" || status != TxFailed {
		t.Fatalf("Exec = %q, %v; want 42P01 after ReadyForQuery", status, err)
	}
	if rd.Buffered() != 0 {
		t.Errorf("%d bytes left unread after the reply", rd.Buffered())
	}
}

func TestExecRefusesAMessageThatHasNoPlaceInASimpleQuerysReply(t *testing.T) {
	reply := AppendEmpty(nil, MsgCopyInResponse)
	c, _ := scriptedServer(t, reply)
	if _, err := Exec(NewReader(c), NewWriter(c), "copy t from stdin", nil); !errors.Is(err, ErrUnexpectedMessage) {
		t.Fatalf("Exec = %v, want ErrUnexpectedMessage", err)
	}
}

func FuzzParseDataRow(f *testing.F) {
	f.Add(Body(AppendDataRow(nil, []byte("t"), nil, []byte("0/3000148"))))
	f.Add([]byte{0, 1, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 2, 0, 0, 0, 9, 'x'})
	f.Fuzz(func(t *testing.T, body []byte) {
		cols, err := ParseDataRow(body, nil)
		if err != nil {
			return
		}
		// Whatever parses re-encodes to the same bytes.
		vals := make([][]byte, len(cols))
		for i, c := range cols {
			if !c.Null {
				vals[i] = append([]byte{}, c.Value...)
			}
		}
		if again := Body(AppendDataRow(nil, vals...)); !bytes.Equal(again, body) {
			t.Fatalf("round trip of %x gave %x", body, again)
		}
	})
}

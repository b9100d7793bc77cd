package router

import (
	"bytes"
	"io"
	"strconv"
	"testing"
	"time"
	"unique"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router/prepared"
)

func TestBindOfAKnownStatementDoesNotAllocate(t *testing.T) {
	srv := &Server{stmts: prepared.NewRegistry(nil)}
	srv.cfg.Store(configs.Default())
	ss := &session{srv: srv, entry: &poolEntry{}}
	st := ss.holdStmt("s1", []byte("select $1::int\x00\x00\x00"))
	sc := &pool.ServerConn{Wr: protocol.NewWriter(io.Discard)}
	sc.Stmts.Add(st.ID)
	frame := []byte{'B', 0, 0, 0, 0}
	frame = append(frame, "\x00s1\x00\x00\x00\x00\x01\x00\x00\x00\x0142\x00\x00"...)
	frame[4] = byte(len(frame) - 1)
	exec := []byte{'E', 0, 0, 0, 9, 0, 0, 0, 0, 0}
	sync := []byte{'S', 0, 0, 0, 4}
	// Warm up the expectation ring and the write buffer.
	for i := 0; i < 10; i++ {
		ss.process(sc, 'B', frame)
		ss.process(sc, 'E', exec)
		ss.process(sc, 'S', sync)
		ss.q.clear()
		sc.Wr.Flush()
	}
	allocs := testing.AllocsPerRun(1000, func() {
		ss.process(sc, 'B', frame)
		ss.process(sc, 'E', exec)
		ss.process(sc, 'S', sync)
		ss.q.clear()
		sc.Wr.Flush()
	})
	if allocs != 0 {
		t.Fatalf("Bind/Execute/Sync of a known statement allocated %.1f times, want 0", allocs)
	}
}

func TestARequestSentAndItsAnswersRelayedDoNotAllocate(t *testing.T) {
	srv := &Server{stmts: prepared.NewRegistry(nil)}
	srv.cfg.Store(configs.Default())
	ss := &session{srv: srv, entry: &poolEntry{}, txnMode: true, inline: true}
	ss.rd = protocol.NewReader(bytes.NewReader(nil))
	ss.wr = protocol.NewWriter(io.Discard)
	st := ss.holdStmt("s1", []byte("select $1::int\x00\x00\x00"))
	answers := bytes.NewReader(nil)
	sc := &pool.ServerConn{Wr: protocol.NewWriter(io.Discard), Rd: protocol.NewReader(answers)}
	sc.Stmts.Add(st.ID)
	ss.server = sc
	bind := []byte{'B', 0, 0, 0, 0}
	bind = append(bind, "\x00s1\x00\x00\x00\x00\x01\x00\x00\x00\x0142\x00\x00"...)
	bind[4] = byte(len(bind) - 1)
	exec := []byte{'E', 0, 0, 0, 9, 0, 0, 0, 0, 0}
	sync := []byte{'S', 0, 0, 0, 4}
	var reply []byte
	reply = protocol.AppendEmpty(reply, protocol.MsgBindComplete)
	reply = protocol.AppendCommandComplete(reply, "SELECT 1")
	reply = protocol.AppendReadyForQuery(reply, protocol.TxInTx)
	roundTrip := func() relayEnd {
		for _, f := range [][]byte{bind, exec, sync} {
			if sent, err := ss.send(nil, f[0], f); sent != sc || err != nil {
				t.Fatalf("send %c: %v, %v; want it sent to the linked server", f[0], sent, err)
			}
		}
		answers.Reset(reply)
		return ss.relayServer(sc, true)
	}
	for i := 0; i < 10; i++ { // warm up the ring and the buffers
		if end := roundTrip(); end != relayIdle {
			t.Fatalf("after ReadyForQuery inside a transaction, relayServer ended with %d; want relayIdle", end)
		}
	}
	if allocs := testing.AllocsPerRun(1000, func() { roundTrip() }); allocs != 0 {
		t.Fatalf("a Bind/Execute/Sync round trip allocated %.1f times, want 0", allocs)
	}
}

func TestParameterSetKeysDifferWheneverTheSetsDiffer(t *testing.T) {
	keys := []string{"search_path", "statement_timeout"}
	sets := []paramList{
		nil,
		{{"search_path", ""}},
		{{"search_path", "a"}},
		{{"search_path", "a\x01statement_timeout"}},
		{{"search_path", "a"}, {"statement_timeout", ""}},
		{{"search_path", "a"}, {"statement_timeout", "1"}},
		{{"statement_timeout", "1"}},
	}
	seen := map[unique.Handle[string]]int{}
	for i, p := range sets {
		ss := &session{paramKeys: keys, params: p}
		k := ss.paramSetKey()
		if j, dup := seen[k]; dup {
			t.Fatalf("sets %v and %v share the key %q", sets[j], p, k.Value())
		}
		seen[k] = i
		// Equal sets share one interned key: comparing keys is comparing
		// pointers.
		if again := (&session{paramKeys: keys, params: append(paramList(nil), p...)}).paramSetKey(); again != k {
			t.Fatalf("equal sets %v got different keys", p)
		}
	}
}

func TestTheGreetingSendsTheServersParametersWithTheClientsOwnValues(t *testing.T) {
	g := newGreeting(map[string]string{"TimeZone": "UTC", "DateStyle": "ISO, MDY", "application_name": "", "client_encoding": "UTF8"})
	naive := func(client paramList) []byte {
		var out []byte
		for _, p := range g.params {
			v := p.Value
			if cv, ok := client.lookup(p.Key); ok {
				v = cv
			}
			out = protocol.AppendParameterStatus(out, p.Key, v)
		}
		return out
	}
	for _, client := range []paramList{
		nil,
		{{"application_name", "pgbench"}},
		{{"DateStyle", "ISO, MDY"}, {"TimeZone", "Europe/Paris"}},
		{{"DateStyle", "German"}, {"TimeZone", "Europe/Paris"}, {"application_name", "a"}, {"client_encoding", "LATIN1"}},
		{{"search_path", "app"}}, // not a reported parameter: not in the greeting
	} {
		got := g.appendTo([]byte("prefix"), client.lookup)
		if want := append([]byte("prefix"), naive(client)...); !bytes.Equal(got, want) {
			t.Errorf("client parameters %v: greeting\n%q, want\n%q", client, got, want)
		}
	}
}

func TestTheAuthQueryCacheStaysBoundedWhateverNamesClientsTry(t *testing.T) {
	var c authQueryCache
	now := time.Now()
	expired := authQueryResult{until: now.Add(-time.Second)}
	fresh := authQueryResult{until: now.Add(time.Hour)}
	for i := range maxAuthQueryCache / 2 {
		c.put("expired"+strconv.Itoa(i), expired)
	}
	for i := range maxAuthQueryCache / 2 {
		c.put("kept"+strconv.Itoa(i), fresh)
	}
	c.put("newcomer", fresh) // full: the expired half goes
	if n := len(c.m); n != maxAuthQueryCache/2+1 {
		t.Fatalf("after the cache filled up, %d users are kept; want the %d unexpired and the newcomer", n, maxAuthQueryCache/2)
	}
	for i := range 2 * maxAuthQueryCache {
		c.put("made-up"+strconv.Itoa(i), fresh)
	}
	if n := len(c.m); n > maxAuthQueryCache {
		t.Fatalf("%d users cached after a client tried %d made-up names; want at most %d", n, 2*maxAuthQueryCache, maxAuthQueryCache)
	}
	if _, ok := c.get("made-up"+strconv.Itoa(2*maxAuthQueryCache-1), now); !ok {
		t.Fatal("the latest result was not kept")
	}
}

package router_test

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/internal/tls13"
)

// clientDSN is f's DSN for database "app", asking for TLS if withTLS.
func clientDSN(f *ferrytest.Ferry, withTLS bool) string {
	if !withTLS {
		return f.AppDSN()
	}
	return strings.Replace(f.AppDSN(), "sslmode=disable", "sslmode=require", 1)
}

// skipWithoutTLS13 skips where pgferry leaves every TLS connection with
// crypto/tls (build tag pgferry_notls13): the loop serves only the records
// internal/tls13 carries.
func skipWithoutTLS13(t *testing.T) {
	t.Helper()
	if !tls13.Enabled {
		t.Skip("built with pgferry_notls13: TLS clients stay on goroutines")
	}
}

func TestATLS13ClientIsServedByTheRelayLoopInBothProtocols(t *testing.T) {
	skipWithoutLoop(t)
	skipWithoutTLS13(t)
	t.Parallel()
	for _, mode := range serverSSLModes {
		t.Run("server sslmode "+mode, func(t *testing.T) {
			t.Parallel()
			aBusyClientIsServedByTheRelayLoop(t, mode, true)
		})
	}
}

func TestATLS12ClientIsServedByItsGoroutine(t *testing.T) {
	skipWithoutLoop(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := loopTestConfig(t, "disable", 2)
	offerClientTLS(cfg, "require")
	f := ferrytest.Start(t, cfg)
	cc, err := pgx.ParseConfig(clientDSN(f, true))
	if err != nil {
		t.Fatal(err)
	}
	cc.TLSConfig.MaxVersion = tls.VersionTLS12 // crypto/tls carries its records
	conn := ferrytest.ConnectConfig(t, ctx, cc)
	for i := 0; i < 20; i++ {
		var n int
		if err := conn.QueryRow(ctx, "select $1::int", i).Scan(&n); err != nil || n != i {
			t.Fatalf("query %d: %d, %v", i, n, err)
		}
	}
	if entries, _ := loopCounters(t, f); entries != 0 {
		t.Fatalf("a TLS 1.2 client entered the relay loop %d times; want never", entries)
	}
}

func TestTheRelayLoopWaitsForASlowTLSClientWhoseRecordsArriveWhole(t *testing.T) {
	skipWithoutLoop(t)
	skipWithoutTLS13(t)
	t.Parallel()
	// 40 MB to a client that stops reading: its socket takes records in
	// part, and the loop sends the rest of each before anything else.
	theRelayLoopWaitsForASlowClient(t, "disable", true)
}

func TestARequestTLSHoldsPastTheReadBufferIsServedWithoutWaitingForTheSocket(t *testing.T) {
	skipWithoutLoop(t)
	skipWithoutTLS13(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := loopTestConfig(t, "disable", 1)
	offerClientTLS(cfg, "require")
	f := ferrytest.Start(t, cfg)
	conn := ferrytest.ConnectPgConn(t, ctx, clientDSN(f, true))
	// Into the loop, and on: after a transaction whose client sent
	// nothing more, the loop waits for the next requests without first
	// reading (loopSkipReads).
	for i := 0; ; i++ {
		if entries, _ := loopCounters(t, f); entries == 1 && i >= 3 {
			break
		}
		if i == 1000 {
			t.Fatal("the client never entered the relay loop")
		}
		if _, err := conn.Exec(ctx, "select 1").ReadAll(); err != nil {
			t.Fatal(err)
		}
	}

	// Two queries in one write, so in one TLS record: the first is 512
	// bytes, the session's read buffer, which it fills; TLS holds the
	// second, which the socket's readiness will not announce.
	first := "select 1 as n --"
	first += strings.Repeat("x", 512-6-len(first))
	fe := conn.Frontend()
	fe.Send(&pgproto3.Query{String: first})
	fe.Send(&pgproto3.Query{String: "select 2 as n"})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	conn.Conn().SetReadDeadline(time.Now().Add(20 * time.Second)) // a hang guard
	var got []string
	for ready := 0; ready < 2; {
		m, err := fe.Receive()
		if err != nil {
			t.Fatalf("after %v: %v (the second query was never served)", got, err)
		}
		switch m := m.(type) {
		case *pgproto3.DataRow:
			got = append(got, string(m.Values[0]))
		case *pgproto3.ReadyForQuery:
			ready++
		case *pgproto3.ErrorResponse:
			t.Fatalf("error: %s", m.Message)
		}
	}
	conn.Conn().SetReadDeadline(time.Time{})
	if strings.Join(got, ",") != "1,2" {
		t.Fatalf("rows %v; want 1 and 2", got)
	}
	if entries, handbacks := loopCounters(t, f); entries != 1 || handbacks != 0 {
		t.Fatalf("%d entries and %d hand-backs; want the loop to serve both", entries, handbacks)
	}
}

func TestAnIdleTLSClientOfTheLoopIsParkedAndComesBackWhenItTalks(t *testing.T) {
	skipWithoutLoop(t)
	skipWithoutParking(t)
	skipWithoutTLS13(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	cfg.RelayLoop = true
	offerClientTLS(cfg, "require")
	f := ferrytest.Start(t, cfg)
	conn := ferrytest.Connect(t, ctx, clientDSN(f, true))
	inLoop(t, ctx, f, conn, 1)
	ferrytest.Eventually(t, parkWait, "the idle TLS client of the loop to be parked", func() (bool, error) {
		return f.Server.Snapshot().ParkedClients == 1, nil
	})
	// Its records' keys were parked with it; the loop serves its next
	// query with them, and ends it when it leaves.
	for i := 0; i < 3; i++ {
		var n int
		if err := conn.QueryRow(ctx, "select $1::int", i).Scan(&n); err != nil || n != i {
			t.Fatalf("the parked TLS client's query %d: %d, %v", i, n, err)
		}
	}
	if entries, handbacks := loopCounters(t, f); entries != 2 || handbacks != 0 {
		t.Fatalf("entries %d, handbacks %d after the parked TLS client's queries: want 2 and 0 (the loop served them)", entries, handbacks)
	}
	theLoopEnds(t, f, "a TLS client of the loop that sent Terminate", func() error { return conn.Close(ctx) })
}

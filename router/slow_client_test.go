package router_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// slowConn trickles writes: 32 KiB every 50 ms.
type slowConn struct{ net.Conn }

func (c slowConn) Write(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Conn.Write(b[n:min(len(b), n+32<<10)])
		n += m
		if err != nil {
			return n, err
		}
		if n < len(b) {
			time.Sleep(50 * time.Millisecond)
		}
	}
	return n, nil
}

func TestALargeQueryThatTakesSecondsToArriveIsServed(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	cc, err := pgx.ParseConfig(f.AppDSN())
	if err != nil {
		t.Fatal(err)
	}
	cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	cc.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		return slowConn{c}, err
	}
	conn := ferrytest.ConnectConfig(t, ctx, cc)
	// 1.5 MB arrives over about 2.5 s: longer than an idle-session sweep
	// (once a second), which must not take the session for an idle one.
	text := strings.Repeat("x", 1500000)
	var n int
	if err := conn.QueryRow(ctx, "select length($1::text)", text).Scan(&n); err != nil || n != len(text) {
		t.Fatalf("slow large query: %d, %v", n, err)
	}
	if err := conn.QueryRow(ctx, "select 1").Scan(&n); err != nil || n != 1 {
		t.Fatalf("next query: %d, %v", n, err)
	}
}

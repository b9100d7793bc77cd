package router_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/configs"
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

func TestClientIdleTimeoutStillEndsAClientThatStalledInTheMiddleOfAMessage(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg := ferrytest.Config(t, cluster)
	cfg.ClientIdleTimeout = configs.Duration(3 * time.Second)
	f := ferrytest.Start(t, cfg)
	c := hijack(t, ferrytest.ConnectPgConn(t, ctx, f.AppDSN()))
	// A Query announcing 200 bytes, of which 10 arrive; then nothing. The
	// idle-session sweep wakes the session (about once a second) while the
	// frame is incomplete; client_idle_timeout must still end it.
	sendRaw(t, c, append([]byte{'Q', 0, 0, 0, 200}, "select 1; "...))
	frames, closed, err := readFrames(c, 20*time.Second, nil)
	if !closed {
		t.Fatalf("the stalled client was not disconnected within 20 s (read: %v; frames: %s)", err, describe(frames))
	}
	if len(frames) != 1 || frames[0].typ != 'E' || !strings.Contains(errorFields(frames[0].body)['M'], "client_idle_timeout") {
		t.Fatalf("got %s, want one FATAL client_idle_timeout", describe(frames))
	}
}

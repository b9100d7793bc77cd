package pool_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pgferry/pgferry/pool"
)

// stallingServer accepts connections and never answers them. It stops at
// the end of the test.
func stallingServer(t *testing.T) (host string, port int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	h, p, _ := net.SplitHostPort(ln.Addr().String())
	port, _ = strconv.Atoi(p)
	return h, port
}

func TestADialToAServerThatNeverAnswersEndsAtServerConnectTimeoutAndGivesItsSlotBack(t *testing.T) {
	for _, mode := range []string{pool.SSLDisable, pool.SSLRequire} {
		t.Run(mode, func(t *testing.T) {
			host, port := stallingServer(t)
			limit := pool.NewLimit(1)
			cfg := config(1)
			cfg.Dial.Hosts, cfg.Dial.Port, cfg.Dial.SSLMode = []string{host}, port, mode
			cfg.Dial.ConnectTimeout = 100 * time.Millisecond
			cfg.DBLimit = limit
			p := newPool(t, cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err := p.Acquire(ctx)
			var de *pool.DialError
			if !errors.As(err, &de) || !pool.Transient(err) {
				t.Fatalf("got %v; want the dial's own timeout (a transient DialError), not the wait's", err)
			}
			if st, ls := p.Stat(), limit.Stat(); st.Dialing != 0 || st.Total != 0 || st.Waiting != 0 || ls.InUse != 0 {
				t.Fatalf("after the dial timed out: %+v, limit %+v; want nothing counted", st, ls)
			}
		})
	}
}

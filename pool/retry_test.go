package pool_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/pgferry/pgferry/internal/pgtest"
	"github.com/pgferry/pgferry/pool"
)

// switchPassword is a PasswordSource whose password a test changes.
type switchPassword struct {
	mu sync.Mutex
	pw string
}

func (s *switchPassword) Password(context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pw, nil
}

func (s *switchPassword) set(pw string) {
	s.mu.Lock()
	s.pw = pw
	s.mu.Unlock()
}

func TestWithinServerLoginRetryOfAFailedLoginNoLoginIsTriedAndWaitersWaitForTheConnectionsThatWork(t *testing.T) {
	src := &switchPassword{pw: pgtest.AppPassword}
	cfg := config(2)
	cfg.Dial.Password = src
	cfg.LoginRetry = time.Minute
	p := newPool(t, cfg)
	held := acquire(t, p) // logged in while the password worked

	// The password stops working: the next borrower's login fails, and it
	// is told the server's error.
	src.set("wrong")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var se *pool.ServerError
	if _, err := p.Acquire(ctx); !errors.As(err, &se) || se.Code != "28P01" {
		t.Fatalf("got %v, want the server's 28P01", err)
	}

	// Within server_login_retry the pool tries no login: the next
	// borrower queues for the connection that works.
	got := make(chan error, 1)
	go func() {
		sc, err := p.Acquire(ctx)
		if err == nil {
			if sc != held {
				err = errors.New("lent a connection other than the one released")
			}
			p.Release(sc)
		}
		got <- err
	}()
	waitFor(t, "the borrower to queue or fail", func() bool { return p.Stat().Waiting == 1 || len(got) == 1 })
	if st := p.Stat(); st.Dialing != 0 || st.DialFailures != 1 {
		t.Fatalf("%d dialing, %d failed logins; want no login tried within server_login_retry of the failure", st.Dialing, st.DialFailures)
	}
	p.Release(held)
	if err := <-got; err != nil {
		t.Fatalf("the queued borrower: %v; want the connection released", err)
	}
}

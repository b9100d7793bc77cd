package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pgferry/pgferry/auth/entra"
	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/metrics"
)

// A reload that gives a database another Entra identity (here a new
// managed identity client id) retires the old identity's token source:
// it stops asking the endpoint for tokens, and the scrape shows the
// database's new source alone.
func TestAReloadThatChangesADatabasesEntraIdentityRetiresItsOldTokenSource(t *testing.T) {
	var mu sync.Mutex
	asked := map[string]int{} // token requests by client id
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("client_id")
		mu.Lock()
		asked[id]++
		n := asked[id]
		mu.Unlock()
		fmt.Fprintf(w, `{"access_token":%q,"expires_on":"%d","resource":%q,"token_type":"Bearer"}`,
			fmt.Sprintf("token-of-%s-%d", id, n), time.Now().Add(time.Hour).Unix(), r.URL.Query().Get("resource"))
	}))
	defer fake.Close()
	t.Setenv("IDENTITY_ENDPOINT", fake.URL+"/msi/token")
	t.Setenv("IDENTITY_HEADER", "test-header")

	// The managed identity token cache is process-wide: fresh ids.
	stamp := time.Now().UnixNano()
	oldID, newID := fmt.Sprintf("old-%d", stamp), fmt.Sprintf("new-%d", stamp)
	database := func(clientID string) *configs.Config {
		return &configs.Config{Databases: map[string]configs.Database{"app": {
			Auth: "entra", EntraCredential: entra.CredentialManagedIdentity, EntraClientID: clientID,
		}}}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sources := newTokenSources(ctx, zap.NewNop())
	defer sources.close()
	reg := prometheus.NewRegistry()
	sources.metrics = metrics.New(reg, nil, "test")

	// The pool of the config in force logs in with the old identity.
	src, err := sources.get("app", database(oldID).Databases["app"])
	if err != nil {
		t.Fatal(err)
	}
	old := src.(*entra.TokenSource)
	// Two tokens: the server refused the first.
	tok, err := old.Password(ctx)
	if err != nil {
		t.Fatal(err)
	}
	old.Rejected(tok)
	if tok, err = old.Password(ctx); err != nil {
		t.Fatal(err)
	}

	// The reload: the router rebuilds the pool, whose first login asks
	// for the new identity's source.
	cfg := database(newID)
	sources.retain(cfg)
	if _, err := sources.get("app", cfg.Databases["app"]); err != nil {
		t.Fatal(err)
	}

	fams, err := reg.Gather()
	if err != nil {
		t.Fatalf("the scrape fails after the reload: %v", err)
	}
	for _, f := range fams {
		if f.GetName() != "pgferry_auth_entra_token_refreshes_total" {
			continue
		}
		if len(f.GetMetric()) != 1 {
			t.Fatalf("%d series of %s, want the database's one", len(f.GetMetric()), f.GetName())
		}
		// The old source's tokens count on: the counter does not go back
		// to the new source's count (0, or 1 once its refresher has a token).
		if v := f.GetMetric()[0].GetCounter().GetValue(); v < 2 {
			t.Fatalf("%s = %v after the reload, want at least 2 (the old identity's tokens)", f.GetName(), v)
		}
	}
	// The old source is closed: with its token dropped it would ask
	// nobody; a source still running would ask the endpoint again.
	old.Rejected(tok)
	if _, err := old.Password(ctx); !errors.Is(err, entra.ErrClosed) {
		t.Fatalf("the old identity's source still serves after the reload: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if asked[oldID] != 2 {
		t.Fatalf("the old identity was asked for %d tokens, want 2 (before the reload)", asked[oldID])
	}
}

package localpg

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
)

// FuzzDSNRoundTrip checks that DSN quotes user, database and password so that
// pgconn parses back exactly what went in.
func FuzzDSNRoundTrip(f *testing.F) {
	for _, s := range []string{"plain", "", "a b", `it's`, `back\slash`, "x=y", "app@contoso.onmicrosoft.com", " lead", "tab\there"} {
		f.Add(s)
	}
	c := &Cluster{Host: "127.0.0.1", Port: 5432}
	f.Fuzz(func(t *testing.T, s string) {
		// NUL cannot travel in a startup packet, and connection strings are
		// text; neither is something a test would pass.
		if !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
			t.Skip()
		}
		cfg, err := pgconn.ParseConfig(c.DSN(s, s, s))
		if err != nil {
			t.Fatalf("ParseConfig(DSN(%q)): %v", s, err)
		}
		wantUser := s
		if s == "" {
			wantUser = cfg.User // pgconn defaults an empty user to the OS user
		}
		if cfg.Password != s || cfg.User != wantUser || cfg.Database != s {
			t.Fatalf("round trip of %q: user %q, database %q, password %q", s, cfg.User, cfg.Database, cfg.Password)
		}
	})
}

package router_test

import (
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/auth"
	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/internal/pgtest"
)

// TestAuthQueryLooksUpEachDatabasesOwnSecretAndNotAnotherDatabasesCachedOne
// gives one user a different secret in each of two databases that auth_query
// reads (auth_dbname unset: the query runs in the client's database, as with
// PgBouncer's per-database auth function). A password that logged in to one
// database must not open the other while the first lookup is still cached.
func TestAuthQueryLooksUpEachDatabasesOwnSecretAndNotAnotherDatabasesCachedOne(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	const user = "aq_cross"
	secrets := map[string]string{"a": "aq-cross-secret-a", "b": "aq-cross-secret-b"}
	cfg := ferrytest.Config(t, cluster)
	cfg.AuthUser = ferrytest.User
	cfg.AuthQuery = "SELECT usename, passwd FROM auth_users WHERE usename = $1"
	for name, password := range secrets {
		dbname := cluster.CreateDatabase(t, pgtest.AppUser)
		conn := ferrytest.Connect(t, ctx, cluster.DSN(dbname, pgtest.AppUser, ferrytest.Password))
		verifier := auth.SCRAMVerifier(password, []byte("salt-of-"+name), 4096)
		if _, err := conn.Exec(ctx, "create table auth_users (usename text, passwd text)"); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "insert into auth_users values ($1, $2)", user, verifier); err != nil {
			t.Fatal(err)
		}
		conn.Close(ctx)
		db := cfg.Databases["app"]
		db.DBName = dbname
		db.User = ferrytest.User // the server login is the same for every client
		cfg.Databases[name] = db
	}
	f := ferrytest.Start(t, cfg)

	conn, err := pgx.Connect(ctx, f.DSN("a", user, secrets["a"]))
	if err != nil {
		t.Fatalf("database a with its own secret: %v", err)
	}
	conn.Close(ctx)
	conn, err = pgx.Connect(ctx, f.DSN("b", user, secrets["a"]))
	if err == nil {
		conn.Close(ctx)
	}
	expectPgError(t, err, "28P01")
	conn, err = pgx.Connect(ctx, f.DSN("b", user, secrets["b"]))
	if err != nil {
		t.Fatalf("database b with its own secret: %v", err)
	}
	conn.Close(ctx)
}

package router_test

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
)

// stockINI writes PgBouncer's documented setup for the test cluster: a
// database line without a password, SCRAM for clients, and an auth_file
// with the user's password, which PgBouncer also uses to log in to the
// server.
func stockINI(t *testing.T, userlist string) *configs.Config {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "userlist.txt"), []byte(userlist), 0o600); err != nil {
		t.Fatal(err)
	}
	ini := fmt.Sprintf(`[databases]
app = host=%s port=%d dbname=app

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = 0
auth_type = scram-sha-256
auth_file = userlist.txt
pool_mode = transaction
`, cluster.Host, cluster.Port)
	path := filepath.Join(dir, "pgbouncer.ini")
	if err := os.WriteFile(path, []byte(ini), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := configs.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestAStockPgBouncerIniServesClientsWithTheAuthFilePasswordForTheServerLogin(t *testing.T) {
	f := ferrytest.Start(t, stockINI(t, fmt.Sprintf("%q %q\n", ferrytest.User, ferrytest.Password)))
	ctx := testContext(t)
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	var n int
	if err := conn.QueryRow(ctx, "select 40 + 2").Scan(&n); err != nil || n != 42 {
		t.Fatalf("pgx through the stock ini: %d, %v", n, err)
	}
	out, err := exec.Command("psql", "-X", "-At", "-c", "select current_user", f.AppDSN()).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != ferrytest.User {
		t.Fatalf("psql through the stock ini: %v\n%s", err, out)
	}
	// A connection storm: every transaction logs in again.
	script := filepath.Join(t.TempDir(), "select.sql")
	if err := os.WriteFile(script, []byte("select 1;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bench := exec.Command("pgbench", "-n", "-C", "-c", "4", "-t", "10", "-f", script, f.AppDSN())
	if out, err := bench.CombinedOutput(); err != nil || !strings.Contains(string(out), "number of transactions actually processed: 40/40") {
		t.Fatalf("pgbench -C through the stock ini: %v\n%s", err, out)
	}
}

func TestAHashedAuthFileEntryWithoutADatabasePasswordGetsAClearServerLoginError(t *testing.T) {
	sum := md5.Sum([]byte(ferrytest.Password + ferrytest.User))
	cfg := stockINI(t, fmt.Sprintf("%q %q\n", ferrytest.User, "md5"+hex.EncodeToString(sum[:])))
	cfg.AuthType = "md5"
	f := ferrytest.Start(t, cfg)
	ctx := testContext(t)
	// The client logs in against the md5 entry; the server login cannot
	// use a hash as a password, and the client is told so.
	_, err := pgx.Connect(ctx, f.AppDSN())
	pe := expectPgError(t, err, "08006")
	if !strings.Contains(pe.Message, `auth_file entry of user "app" is a hash`) {
		t.Fatalf("got %q", pe.Message)
	}
}

func TestAnMd5AuthFileEntryAnswersTheServersMd5ChallengeWithoutThePassword(t *testing.T) {
	ctx := testContext(t)
	const user, password = "md5_dropin", "md5-dropin-secret"
	if err := cluster.Exec(ctx, "set password_encryption = 'md5'; drop role if exists "+user+"; create role "+user+" login password '"+password+"'"); err != nil {
		t.Fatal(err)
	}
	if err := cluster.AddHBA("host all " + user + " 127.0.0.1/32 md5"); err != nil {
		t.Fatal(err)
	}
	super := ferrytest.Connect(t, ctx, cluster.SuperDSN("postgres"))
	var stored string
	if err := super.QueryRow(ctx, "select rolpassword from pg_authid where rolname = $1", user).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stored, "md5") {
		t.Fatalf("the role's password is stored as %.6q..., want md5", stored)
	}
	cfg := stockINI(t, fmt.Sprintf("%q %q\n", user, stored))
	cfg.AuthType = "md5"
	f := ferrytest.Start(t, cfg)
	conn, err := pgx.Connect(ctx, f.DSN("app", user, password))
	if err != nil {
		t.Fatalf("an md5 client through an md5 auth_file entry to an md5 server: %v", err)
	}
	defer conn.Close(ctx)
	var who string
	if err := conn.QueryRow(ctx, "select current_user").Scan(&who); err != nil || who != user {
		t.Fatalf("current_user = %q, %v", who, err)
	}
}

// scramRole creates a role with a SCRAM password and returns its secret as
// pg_authid holds it.
func scramRole(t *testing.T, ctx context.Context, user, password string) string {
	t.Helper()
	if err := cluster.Exec(ctx, "set password_encryption = 'scram-sha-256'; drop role if exists "+user+"; create role "+user+" login password '"+password+"'"); err != nil {
		t.Fatal(err)
	}
	super := ferrytest.Connect(t, ctx, cluster.SuperDSN("postgres"))
	var stored string
	if err := super.QueryRow(ctx, "select rolpassword from pg_authid where rolname = $1", user).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stored, "SCRAM-SHA-256$") {
		t.Fatalf("the role's password is stored as %.14q..., want SCRAM", stored)
	}
	return stored
}

func TestScramPassThroughLogsInToTheServerWithTheClientsProofOfTheAuthFileSecret(t *testing.T) {
	ctx := testContext(t)
	const user, password = "scram_dropin", "scram-dropin-secret"
	stored := scramRole(t, ctx, user, password)
	f := ferrytest.Start(t, stockINI(t, fmt.Sprintf("%q %q\n", user, stored)))
	dsn := f.DSN("app", user, password)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("pgx with SCRAM pass-through: %v", err)
	}
	defer conn.Close(ctx)
	var who string
	if err := conn.QueryRow(ctx, "select current_user").Scan(&who); err != nil || who != user {
		t.Fatalf("current_user = %q, %v", who, err)
	}
	out, err := exec.Command("psql", "-X", "-At", "-c", "select current_user", dsn).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != user {
		t.Fatalf("psql with SCRAM pass-through: %v\n%s", err, out)
	}
	script := filepath.Join(t.TempDir(), "select.sql")
	if err := os.WriteFile(script, []byte("select 1;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bench := exec.Command("pgbench", "-n", "-C", "-c", "4", "-t", "20", "-f", script, dsn)
	if out, err := bench.CombinedOutput(); err != nil || !strings.Contains(string(out), "number of transactions actually processed: 80/80") {
		t.Fatalf("pgbench -C with SCRAM pass-through: %v\n%s", err, out)
	}
	// The server's secret changes: pass-through cannot work, and the next
	// server login says so.
	if err := cluster.Exec(ctx, "set password_encryption = 'scram-sha-256'; alter role "+user+" password 'another-secret'"); err != nil {
		t.Fatal(err)
	}
	cfg := stockINI(t, fmt.Sprintf("%q %q\n", user, stored))
	f2 := ferrytest.Start(t, cfg)
	_, err = pgx.Connect(ctx, f2.DSN("app", user, password))
	if pe := expectPgError(t, err, "08006"); !strings.Contains(pe.Message, "SCRAM pass-through is impossible") {
		t.Fatalf("got %q", pe.Message)
	}
}

// authQueryINI is the stock ini with auth_user: "app" (in auth_file) looks
// up every other user with PgBouncer's default auth_query.
func authQueryINI(t *testing.T) *configs.Config {
	t.Helper()
	cfg := stockINI(t, fmt.Sprintf("%q %q\n", ferrytest.User, ferrytest.Password))
	cfg.AuthUser = ferrytest.User
	return cfg
}

func TestAuthQueryLooksUpUsersMissingFromAuthFileAndRefusesTheOnesThatMayNotLogIn(t *testing.T) {
	ctx := testContext(t)
	super := ferrytest.Connect(t, ctx, cluster.SuperDSN("postgres"))
	// auth_user reads pg_authid, as PgBouncer's setup requires.
	if _, err := super.Exec(ctx, "grant pg_read_all_data to app; grant select on pg_authid to app"); err != nil {
		t.Fatal(err)
	}
	scramRole(t, ctx, "aq_ok", "aq-ok-secret")
	scramRole(t, ctx, "aq_expired", "aq-expired-secret")
	scramRole(t, ctx, "aq_nologin", "aq-nologin-secret")
	if _, err := super.Exec(ctx, "alter role aq_expired valid until '2000-01-01'; alter role aq_nologin nologin"); err != nil {
		t.Fatal(err)
	}
	f := ferrytest.Start(t, authQueryINI(t))

	conn, err := pgx.Connect(ctx, f.DSN("app", "aq_ok", "aq-ok-secret"))
	if err != nil {
		t.Fatalf("a user found with auth_query: %v", err)
	}
	var who string
	if err := conn.QueryRow(ctx, "select current_user").Scan(&who); err != nil || who != "aq_ok" {
		t.Fatalf("current_user = %q, %v (SCRAM pass-through with the looked-up secret)", who, err)
	}
	conn.Close(ctx)

	wrong := "password authentication failed for user"
	for _, tc := range []struct{ user, password, why string }{
		{"aq_ok", "not-the-password", "a wrong password"},
		{"aq_missing", "whatever", "a role that does not exist"},
		{"aq_expired", "aq-expired-secret", "an expired role"},
		{"aq_nologin", "aq-nologin-secret", "a NOLOGIN role"},
	} {
		_, err := pgx.Connect(ctx, f.DSN("app", tc.user, tc.password))
		pe := expectPgError(t, err, "28P01")
		if !strings.Contains(pe.Message, wrong) {
			t.Errorf("%s: %q, want the wrong-password message", tc.why, pe.Message)
		}
	}
}

func TestAFailingAuthQueryGetsAClearErrorWithoutAHang(t *testing.T) {
	ctx := testContext(t)
	cfg := authQueryINI(t)
	cfg.AuthQuery = "SELECT rolname, rolpassword FROM no_such_table WHERE rolname=$1"
	f := ferrytest.Start(t, cfg)
	_, err := pgx.Connect(ctx, f.DSN("app", "aq_someone", "whatever"))
	pe := expectPgError(t, err, "08006")
	// The server's error (here naming the query's table) stays in
	// pgferry's log: the client is not logged in.
	if !strings.Contains(pe.Message, "could not look up user \"aq_someone\" with auth_query") || strings.Contains(pe.Message, "no_such_table") {
		t.Fatalf("got %q", pe.Message)
	}
}

func TestAuthQueryServesARoleStoredAsMd5ByAnsweringTheServerFromTheHash(t *testing.T) {
	ctx := testContext(t)
	const user, password = "aq_md5", "aq-md5-secret"
	// (pg_authid's privileges are kept per database: granted where the
	// lookup runs.)
	super := ferrytest.Connect(t, ctx, cluster.SuperDSN("app"))
	if _, err := super.Exec(ctx, "grant select on pg_authid to app"); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Exec(ctx, "set password_encryption = 'md5'; drop role if exists "+user+"; create role "+user+" login password '"+password+"'"); err != nil {
		t.Fatal(err)
	}
	if err := cluster.AddHBA("host all " + user + " 127.0.0.1/32 md5"); err != nil {
		t.Fatal(err)
	}
	cfg := authQueryINI(t)
	cfg.AuthType = "md5"
	f := ferrytest.Start(t, cfg)
	conn, err := pgx.Connect(ctx, f.DSN("app", user, password))
	if err != nil {
		t.Fatalf("an md5 role found with auth_query: %v", err)
	}
	defer conn.Close(ctx)
	var who string
	if err := conn.QueryRow(ctx, "select current_user").Scan(&who); err != nil || who != user {
		t.Fatalf("current_user = %q, %v", who, err)
	}
	if _, err := pgx.Connect(ctx, f.DSN("app", user, "wrong")); err == nil {
		t.Fatal("a wrong password logged in")
	}
}

// auth_query's lookup reads the user name in UTF8 whatever client_encoding
// the pool's last client left on the server it runs on: a role whose name
// is not ASCII was not found (28P01) after a LATIN1 client, the name's
// UTF-8 bytes read as Latin-1.
func TestAuthQueryFindsARoleWithANonASCIINameWhateverEncodingTheServerWasLeftIn(t *testing.T) {
	ctx := testContext(t)
	// (pg_authid's privileges are kept per database: granted where the
	// lookup runs.)
	super := ferrytest.Connect(t, ctx, cluster.SuperDSN("app"))
	if _, err := super.Exec(ctx, "grant select on pg_authid to app"); err != nil {
		t.Fatal(err)
	}
	const user, password = "aq_rôle", "aq-role-secret"
	if err := cluster.Exec(ctx, `set password_encryption = 'scram-sha-256'; drop role if exists "`+user+`"; create role "`+user+`" login password '`+password+`'`); err != nil {
		t.Fatal(err)
	}
	cfg := authQueryINI(t)
	setPoolSize(cfg, "app", 1) // the lookup gets the server the client leaves
	f := ferrytest.Start(t, cfg)

	left := ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
	if _, err := left.Exec(ctx, "set client_encoding to 'LATIN1'").ReadAll(); err != nil {
		t.Fatal(err)
	}
	if err := left.Close(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, f.DSN("app", user, password))
	if err != nil {
		t.Fatalf("a role named %q found with auth_query: %v", user, err)
	}
	defer conn.Close(ctx)
	var who string
	if err := conn.QueryRow(ctx, "select current_user").Scan(&who); err != nil || who != user {
		t.Fatalf("current_user = %q, %v", who, err)
	}
}

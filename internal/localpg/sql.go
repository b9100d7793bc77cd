package localpg

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/jackc/pgx/v5"
)

// DSN returns a keyword/value connection string for a TCP connection to db as
// user with password, without TLS:
// "host=127.0.0.1 port=N dbname=db user=user password=pw sslmode=disable".
// Values that need it are quoted. Append settings such as
// " sslmode=verify-full sslrootcert=..." to change them; a later keyword wins.
func (c *Cluster) DSN(db, user, password string) string {
	return fmt.Sprintf("host=%s port=%d dbname=%s user=%s password=%s sslmode=disable",
		dsnValue(c.Host), c.Port, dsnValue(db), dsnValue(user), dsnValue(password))
}

// SuperDSN returns DSN(db, SuperUser, SuperPassword).
func (c *Cluster) SuperDSN(db string) string {
	return c.DSN(db, c.SuperUser, c.SuperPassword)
}

// adminDSN connects as the superuser over the private unix socket, which
// pg_hba.conf trusts, so the harness keeps working whatever host lines a test
// adds with AddHBA.
func (c *Cluster) adminDSN(db string) string {
	return fmt.Sprintf("host=%s port=%d dbname=%s user=%s password=%s sslmode=disable",
		dsnValue(c.SocketDir), c.Port, dsnValue(db), dsnValue(c.SuperUser), dsnValue(c.SuperPassword))
}

// dsnValue quotes v for a keyword/value connection string when needed
// (libpq "Keyword/Value Connection Strings": single quotes, with \ and '
// escaped by a backslash).
func dsnValue(v string) string {
	if v != "" && !strings.ContainsAny(v, " \t\n\r\v\f\\'=") {
		return v
	}
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	return "'" + r.Replace(v) + "'"
}

// quoteIdent quotes a SQL identifier (names like "app@contoso.onmicrosoft.com"
// need it).
func quoteIdent(name string) string {
	return pgx.Identifier{name}.Sanitize()
}

// quoteLiteral quotes a SQL string literal. standard_conforming_strings is on
// (the default since PostgreSQL 9.1), so only quotes need doubling.
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// withAdmin runs f on a new superuser connection to db over the unix socket.
func (c *Cluster) withAdmin(ctx context.Context, db string, f func(*pgx.Conn) error) error {
	conn, err := pgx.Connect(ctx, c.adminDSN(db))
	if err != nil {
		return fmt.Errorf("connect to %s on port %d: %w", db, c.Port, err)
	}
	err = f(conn)
	closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = conn.Close(closeCtx)
	return err
}

// Exec runs sql with args as the superuser on database "postgres", on a new
// connection. It blocks until done or ctx ends. Safe for concurrent use.
func (c *Cluster) Exec(ctx context.Context, sql string, args ...any) error {
	return c.withAdmin(ctx, "postgres", func(conn *pgx.Conn) error {
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			return fmt.Errorf("exec %q: %w", sql, err)
		}
		return nil
	})
}

// QueryInt runs sql with args as the superuser on database "postgres" and
// returns the first column of the single row, which must be an integer type
// (cast booleans with ::int). Safe for concurrent use.
func (c *Cluster) QueryInt(ctx context.Context, sql string, args ...any) (int64, error) {
	var n int64
	err := c.withAdmin(ctx, "postgres", func(conn *pgx.Conn) error {
		if err := conn.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
			return fmt.Errorf("query %q: %w", sql, err)
		}
		return nil
	})
	return n, err
}

// CreateRole creates a LOGIN role with a SCRAM-SHA-256 password. name is
// quoted, so any name PostgreSQL allows works (e.g. an Entra user principal
// name like "app@contoso.onmicrosoft.com"). Safe for concurrent use.
func (c *Cluster) CreateRole(ctx context.Context, name, password string) error {
	return c.runWithPassword(ctx, "create role "+name, "CREATE ROLE "+quoteIdent(name)+" LOGIN PASSWORD "+quoteLiteral(password))
}

// runWithPassword runs stmt, a utility statement holding a password as a
// literal (they take no parameters), as the superuser, the password hashed
// by SCRAM-SHA-256 whatever Conf says. Errors name what, never stmt.
func (c *Cluster) runWithPassword(ctx context.Context, what, stmt string) error {
	return c.withAdmin(ctx, "postgres", func(conn *pgx.Conn) error {
		tx, err := conn.Begin(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
		if _, err := tx.Exec(ctx, "SET LOCAL password_encryption = 'scram-sha-256'"); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if _, err := tx.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if err := tx.Commit(ctx); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	})
}

// TB is the part of testing.TB that CreateDatabase uses, so that this
// package, which the pgferry binary's demo links, does not import testing.
type TB interface {
	Helper()
	Name() string
	Cleanup(func())
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
}

// CreateDatabase creates a database with a name unique to this test, owned by
// owner (the superuser if owner is ""), and drops it WITH (FORCE) in
// t.Cleanup unless the cluster has been removed by then. It fails the test on
// error. Safe for concurrent use by parallel tests.
func (c *Cluster) CreateDatabase(t TB, owner string) string {
	t.Helper()
	if owner == "" {
		owner = c.SuperUser
	}
	suffix, err := randomHex(4)
	if err != nil {
		t.Fatal(err)
	}
	name := dbName(t.Name(), suffix)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Exec(ctx, "CREATE DATABASE "+quoteIdent(name)+" OWNER "+quoteIdent(owner)); err != nil {
		t.Fatalf("localpg: %v", err)
	}
	t.Cleanup(func() {
		if c.checkNotRemoved() != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+quoteIdent(name)+" WITH (FORCE)"); err != nil {
			if !c.isRunning() {
				// The test stopped the server and left it down; the
				// database goes with the data directory at Stop.
				return
			}
			t.Errorf("localpg: %v", err)
		}
	})
	return name
}

// dbName turns a test name into a database name: lower case letters, digits
// and underscores, at most 63 bytes (NAMEDATALEN-1) including the suffix.
func dbName(testName, suffix string) string {
	var b strings.Builder
	b.WriteString("t_")
	for _, r := range strings.ToLower(testName) {
		if b.Len() >= 63-len(suffix)-1 {
			break
		}
		if r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r)) {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	b.WriteByte('_')
	b.WriteString(suffix)
	return b.String()
}

// AddHBA puts lines at the top of pg_hba.conf and reloads the configuration.
// It returns once new connections are authenticated with the new rules. If
// PostgreSQL rejects a line, the old file is restored and the error names the
// bad lines. Safe for concurrent use (calls are serialised).
func (c *Cluster) AddHBA(lines ...string) error {
	if err := c.checkNotRemoved(); err != nil {
		return err
	}
	c.hbaMu.Lock()
	defer c.hbaMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	old, err := os.ReadFile(c.hbaPath())
	if err != nil {
		return fmt.Errorf("localpg: read pg_hba.conf: %w", err)
	}
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	b.Write(old)
	if err := writeFile(c.hbaPath(), []byte(b.String()), 0o600, c.owner); err != nil {
		return fmt.Errorf("localpg: %w", err)
	}

	// pg_hba_file_rules parses the file on disk without loading it.
	var bad string
	var loadTime time.Time
	err = c.withAdmin(ctx, "postgres", func(conn *pgx.Conn) error {
		if err := conn.QueryRow(ctx, `SELECT coalesce(string_agg('line ' || line_number || ': ' || error, '; '), '')
			FROM pg_hba_file_rules WHERE error IS NOT NULL`).Scan(&bad); err != nil {
			return err
		}
		return conn.QueryRow(ctx, "SELECT pg_conf_load_time()").Scan(&loadTime)
	})
	if err == nil && bad != "" {
		err = fmt.Errorf("invalid pg_hba.conf lines: %s", bad)
	}
	if err != nil {
		if werr := writeFile(c.hbaPath(), old, 0o600, c.owner); werr != nil {
			return fmt.Errorf("localpg: add hba: %w (restore: %v)", err, werr)
		}
		return fmt.Errorf("localpg: add hba: %w", err)
	}

	if err := c.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		return fmt.Errorf("localpg: %w", err)
	}
	// pg_reload_conf only signals the postmaster. A new backend reports the
	// time its postmaster last loaded the configuration, so wait for that to
	// move past the time seen before the reload.
	return c.poll(ctx, "pg_hba.conf reload", func(ctx context.Context) (bool, error) {
		var t time.Time
		err := c.withAdmin(ctx, "postgres", func(conn *pgx.Conn) error {
			return conn.QueryRow(ctx, "SELECT pg_conf_load_time()").Scan(&t)
		})
		return t.After(loadTime), err
	})
}

// String describes the cluster without secrets, for logs.
func (c *Cluster) String() string {
	return "pgtest cluster " + c.Host + ":" + strconv.Itoa(c.Port) + " (" + c.DataDir + ")"
}

package router_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/internal/pgtest"
)

// runClient runs a PostgreSQL client program (psql, pgbench) against pgferry
// and returns its standard output. libpq settings come only from the
// arguments and the PG* variables set here, never from the environment of
// the test run.
func runClient(t *testing.T, ctx context.Context, f *ferrytest.Ferry, prog string, args ...string) string {
	t.Helper()
	cmd := osexec.CommandContext(ctx, pgtest.Binary(prog), args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env,
		"PGHOST=127.0.0.1",
		"PGPORT="+strconv.Itoa(f.Addr.Port),
		"PGUSER="+ferrytest.User,
		"PGPASSWORD="+ferrytest.Password,
		"PGSSLMODE=disable",
		"PGCONNECT_TIMEOUT=10",
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", prog, strings.Join(args, " "), err, lastLines(stdout.String(), 20), stderr.String())
	}
	return stdout.String()
}

func TestPsqlCommandsAndCopyToRunThroughPgferry(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, db := configWithOwnDatabase(t)
	f := ferrytest.Start(t, cfg)

	t.Run("psql -c", func(t *testing.T) {
		out := runClient(t, ctx, f, "psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", "app",
			"-c", "create table words (id int, word text)",
			"-c", "insert into words select g, 'w' || g from generate_series(1, 1000) g",
			"-c", "select count(*), max(word) from words where id > 10",
			"-c", "select current_database()")
		want := "CREATE TABLE\nINSERT 0 1000\n990|w999\n" + db + "\n"
		if out != want {
			t.Fatalf("psql output:\n%s\nwant:\n%s", out, want)
		}
	})

	t.Run(`\copy to a file and to stdout`, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "words.csv")
		runClient(t, ctx, f, "psql", "-X", "-v", "ON_ERROR_STOP=1", "-d", "app",
			"-c", `\copy (select id, word from words order by id) to '`+path+`' with csv`)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		if len(lines) != 1000 || lines[0] != "1,w1" || lines[999] != "1000,w1000" {
			t.Fatalf("copied %d lines, first %q, last %q", len(lines), lines[0], lines[len(lines)-1])
		}

		out := runClient(t, ctx, f, "psql", "-X", "-v", "ON_ERROR_STOP=1", "-d", "app",
			"-c", `\copy (select g, repeat('x', 500) from generate_series(1, 20000) g) to stdout`)
		rows := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(rows) != 20000 || rows[19999] != "20000\t"+strings.Repeat("x", 500) {
			t.Fatalf("COPY TO STDOUT gave %d rows, last %.40q", len(rows), rows[len(rows)-1])
		}
	})

	t.Run(`\copy from stdin`, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "in.csv")
		var b strings.Builder
		for i := 2001; i <= 7000; i++ {
			fmt.Fprintf(&b, "%d,w%d\n", i, i)
		}
		if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		runClient(t, ctx, f, "psql", "-X", "-v", "ON_ERROR_STOP=1", "-d", "app",
			"-c", `\copy words from '`+path+`' with csv`)
		out := runClient(t, ctx, f, "psql", "-X", "-At", "-d", "app", "-c", "select count(*) from words")
		if out != "6000\n" {
			t.Fatalf("count after COPY FROM: %q, want 6000", out)
		}
	})
}

var (
	pgbenchProcessed = regexp.MustCompile(`number of transactions actually processed: (\d+)/(\d+)`)
	pgbenchFailed    = regexp.MustCompile(`number of failed transactions: (\d+)`)
)

func TestPgbenchHundredClientsOverPoolOfTenCompleteEveryTransaction(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, db := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 10)
	// Plain server connections: TLS to the server has its own test, and
	// under the race detector it triples this test's run time.
	e := cfg.Databases["app"]
	e.SSLMode = "disable"
	cfg.Databases["app"] = e
	f := ferrytest.Start(t, cfg)
	// Initialise through pgferry too: DDL, client-side COPY, VACUUM.
	runClient(t, ctx, f, "pgbench", "-i", "-s", "1", "-q", "app")

	const clients, perClient = 100, 50
	for _, mode := range []string{"simple", "extended", "prepared"} {
		t.Run(mode, func(t *testing.T) {
			// One thread per client (-j): with -M prepared, pgbench 15
			// prepares each command with a synchronous PQprepare the first
			// time a client runs it, which blocks every other client of
			// the thread. A client preparing BEGIN needs a server; if the
			// other clients of its thread hold all servers inside their
			// transactions, the thread waits on itself until
			// query_wait_timeout. PgBouncer has the same interaction; it is
			// not the pooler's to fix.
			//
			// -N (skip the tellers and branches updates) keeps BEGIN ... END
			// transactions of five statements but drops the single
			// pgbench_branches row at scale 1 that every transaction would
			// queue on: that measures row locks, not the pooler, and
			// doubles the run time.
			out := runClient(t, ctx, f, "pgbench", "-n", "-N", "-M", mode,
				"-c", fmt.Sprint(clients), "-j", fmt.Sprint(clients), "-t", fmt.Sprint(perClient), "app")
			m := pgbenchProcessed.FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("no processed count in pgbench output:\n%s", out)
			}
			if want := fmt.Sprint(clients * perClient); m[1] != want || m[2] != want {
				t.Fatalf("pgbench processed %s/%s transactions, want %s:\n%s", m[1], m[2], want, out)
			}
			if m := pgbenchFailed.FindStringSubmatch(out); m == nil || m[1] != "0" {
				t.Fatalf("pgbench reports failed transactions:\n%s", out)
			}
		})
	}
	if n := f.Server.Config().Databases["app"].PoolSize; n != 10 {
		t.Fatalf("pool size %d, want 10", n)
	}
	servers, err := queryInt(ctx, "select count(*) from pg_stat_activity where datname = $1 and usename = 'app'", db)
	if err != nil {
		t.Fatal(err)
	}
	if servers > 10 {
		t.Fatalf("%d server connections for a pool of 10", servers)
	}
}

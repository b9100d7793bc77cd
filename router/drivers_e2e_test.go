package router_test

// Real drivers through pgferry, each run as its own program: postgres.js
// (every statement a named prepared statement, SET and LISTEN included),
// node-postgres (simple queries without parameters, LISTEN among them),
// psycopg 3 on libpq 15 (prepared statements it evicts with SQL
// DEALLOCATE) and pgJDBC (named server-side statements from their first
// run, SET SESSION CHARACTERISTICS for read-only connections). These are the drivers whose reports opened issue 18: a
// search_path lost or another client's, a SET leaked, notifications lost.
// The programs live in testdata/drivers; .ci/install installs Node.js's
// packages there (npm ci), Debian's python3-psycopg and
// libpostgresql-jdbc-java (run with a JDK's java, which runs a source file).

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// driverProgram is one driver's test program and the cases it must pass.
type driverProgram struct {
	name  string
	cmd   []string // the interpreter and the program; the address goes last
	url   bool     // a postgres:// URL, not a key=value DSN
	jdbc  bool     // a jdbc:postgresql:// URL
	needs string   // what must exist for it to run (a file), for the message
	cases []string
}

var driverPrograms = []driverProgram{
	{name: "postgres.js", cmd: []string{"node", "testdata/drivers/postgresjs.mjs"}, url: true,
		needs: "testdata/drivers/node_modules/postgres/package.json",
		cases: []string{"search_path", "statement_timeout", "listen", "listen statement", "prepared statements", "transactions"}},
	{name: "node-postgres", cmd: []string{"node", "testdata/drivers/nodepg.mjs"}, url: true,
		needs: "testdata/drivers/node_modules/pg/package.json",
		cases: []string{"listen", "named statements", "settings", "errors"}},
	{name: "psycopg 3", cmd: []string{"/usr/bin/python3", "testdata/drivers/psycopg3.py"},
		needs: "/usr/lib/python3/dist-packages/psycopg/__init__.py",
		cases: []string{"evictions", "concurrent", "transactions"}},
	{name: "pgJDBC", cmd: []string{"java", "-cp", "/usr/share/java/postgresql.jar", "testdata/drivers/Jdbc.java"}, jdbc: true,
		needs: "/usr/share/java/postgresql.jar",
		cases: []string{"search_path", "read only", "listen", "transactions", "prepared statements"}},
}

func TestRealDriversRunTheirSessionsThroughATransactionPoolAsOnPostgreSQL(t *testing.T) {
	for _, d := range driverPrograms {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			if _, err := os.Stat(d.needs); err != nil {
				// The drivers are part of the test suite: missing, they
				// fail it (bash .ci/install installs them).
				t.Fatalf("%s is not installed (%v): run bash .ci/install", d.name, err)
			}
			if _, err := exec.LookPath(d.cmd[0]); err != nil {
				t.Fatalf("%s: %v: run bash .ci/install", d.name, err)
			}
			ctx := testContext(t)
			cfg, _ := configWithOwnDatabase(t)
			setPoolSize(cfg, "app", 2)
			f := ferrytest.Start(t, cfg)
			addr := f.AppDSN()
			switch {
			case d.url:
				addr = fmt.Sprintf("postgres://%s:%s@%s:%d/app?sslmode=disable", ferrytest.User, ferrytest.Password, f.Addr.IP, f.Addr.Port)
			case d.jdbc:
				addr = fmt.Sprintf("jdbc:postgresql://%s:%d/app?user=%s&password=%s&sslmode=disable", f.Addr.IP, f.Addr.Port, ferrytest.User, ferrytest.Password)
			}
			cmd := exec.CommandContext(ctx, d.cmd[0], append(d.cmd[1:], addr)...)
			cmd.Dir, _ = filepath.Abs(".")
			var out, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &stderr
			runErr := cmd.Run()
			passed := map[string]bool{}
			sc := bufio.NewScanner(&out)
			for sc.Scan() {
				line := sc.Text()
				switch {
				case strings.HasPrefix(line, "OK "):
					passed[strings.TrimPrefix(line, "OK ")] = true
				case strings.HasPrefix(line, "FAIL "):
					t.Errorf("%s: %s", d.name, strings.TrimPrefix(line, "FAIL "))
				}
			}
			for _, c := range d.cases {
				if !passed[c] {
					t.Errorf("%s: case %q did not pass", d.name, c)
				}
			}
			if runErr != nil || t.Failed() {
				t.Errorf("%s exited: %v\nstdout:\n%s\nstderr:\n%s", d.name, runErr, lastLines(out.String(), 30), lastLines(stderr.String(), 30))
			}
			assertNoPanic(t, f)
		})
	}
}

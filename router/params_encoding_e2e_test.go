package router_test

// End-to-end tests of a SET whose value is not ASCII, replayed on a
// server connection another client last used with another
// client_encoding: the value must reach the server as the bytes the
// client meant, read in the client's encoding.

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

func TestANonASCIISetValueIsReplayedInTheClientsEncodingWhateverTheServerLastUsed(t *testing.T) {
	t.Parallel()
	cfg, db, _ := multiConfig(t, true)
	ctx := testContext(t)
	cases := []struct {
		name       string
		client     string // the client's client_encoding
		other      string // that of the client that used the next server last
		searchPath string // café, in the client's encoding
	}{
		{name: "a LATIN1 client on a server last used in UTF8", client: "LATIN1", other: "UTF8", searchPath: "caf\xe9"},
		{name: "a UTF8 client on a server last used in LATIN1", client: "UTF8", other: "LATIN1", searchPath: "caf\xc3\xa9"},
	}
	vias := []struct {
		name string
		set  func(c *rawClient, sql string)
	}{
		{"a simple query", func(c *rawClient, sql string) { c.run([]pgproto3.FrontendMessage{&pgproto3.Query{String: sql}}) }},
		{"an unnamed statement", func(c *rawClient, sql string) {
			c.run([]pgproto3.FrontendMessage{parse("", sql), bind(""), execMsg(), syncMsg()})
		}},
	}
	for _, via := range vias {
		for _, tc := range cases {
			t.Run(via.name+"/"+tc.name, func(t *testing.T) {
				set := "SET search_path TO '" + tc.searchPath + "', public"
				const read = "select current_setting('search_path'), current_setting('client_encoding'), pg_backend_pid()"
				direct := newRawClient(t, cluster.DSN(db, ferrytest.User, ferrytest.Password)+" client_encoding="+tc.client)
				via.set(direct, set)
				want := direct.row(read)
				if !strings.HasPrefix(want, `"`+tc.searchPath+`", public|`+tc.client+"|") {
					t.Fatalf("the test is wrong: PostgreSQL shows %q", want)
				}
				want = want[:strings.LastIndexByte(want, '|')]

				f := ferrytest.Start(t, cfg) // two server connections of its own
				c := newRawClient(t, f.AppDSN()+" client_encoding="+tc.client)
				via.set(c, set)
				first := c.row("select pg_backend_pid()")
				// Another client holds the server connection the client
				// used, and a client in the other encoding leaves the
				// other one in its encoding: the client's next query runs
				// there, after pgferry replays its parameters.
				holder := ferrytest.Connect(t, ctx, f.AppDSN())
				tx, err := holder.Begin(ctx)
				if err != nil {
					t.Fatal(err)
				}
				defer tx.Rollback(ctx)
				other := newRawClient(t, f.AppDSN()+" client_encoding="+tc.other)
				otherPID := other.row("select pg_backend_pid()")
				if otherPID == first {
					t.Fatalf("the other client runs on the client's server connection %s", first)
				}
				got := c.row(read)
				if pid := got[strings.LastIndexByte(got, '|')+1:]; pid != otherPID {
					t.Fatalf("the client runs on server %s, not on the one the other client used (%s)", pid, otherPID)
				}
				if got = got[:strings.LastIndexByte(got, '|')]; got != want {
					t.Errorf("the client sees %q on its next server connection; PostgreSQL shows %q", got, want)
				}
			})
		}
	}
}

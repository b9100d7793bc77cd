package router_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/protocol"
)

// A client may send its last statement and Terminate in one write and
// close without reading the answer (a script that logs an event, a
// fire-and-forget client). PostgreSQL reads and runs the statement before
// it reads the Terminate; pgferry must send it to the server too, not drop
// it with the session, in either protocol, whoever serves the session.
func TestAStatementFollowedAtOnceByTerminateRunsAsItWouldOnPostgreSQL(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	ctx := testContext(t)
	for _, loop := range []bool{true, false} {
		for _, extended := range []bool{false, true} {
			name := fmt.Sprintf("relay loop %v, extended protocol %v", loop, extended)
			t.Run(name, func(t *testing.T) {
				if loop {
					skipWithoutLoop(t)
				}
				cfg, _ := configWithOwnDatabase(t)
				cfg.RelayLoop = loop
				setPoolSize(cfg, "app", 1)
				f := ferrytest.Start(t, cfg)
				ctrl := ferrytest.Connect(t, ctx, f.AppDSN())
				if _, err := ctrl.Exec(ctx, "create table events (id int)"); err != nil {
					t.Fatal(err)
				}
				pc := ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
				if loop {
					allIntoTheLoop(t, ctx, f, pc)
				}
				c := hijack(t, pc)
				const insert = "insert into events values (42)"
				var b []byte
				if extended {
					b = encode(t, &pgproto3.Parse{Query: insert})
					b = append(b, encode(t, &pgproto3.Bind{})...)
					b = append(b, encode(t, &pgproto3.Execute{})...)
					b = append(b, encode(t, &pgproto3.Sync{})...)
				} else {
					b = protocol.AppendQuery(b, insert)
				}
				b = protocol.AppendTerminate(b)
				sendRaw(t, c, b)
				readUntilClosed(t, c)
				ferrytest.Eventually(t, 10*time.Second, "the client's insert to be committed", func() (bool, error) {
					var n int
					err := ctrl.QueryRow(ctx, "select count(*) from events where id = 42").Scan(&n)
					return n == 1, err
				})
			})
		}
	}
}

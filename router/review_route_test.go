package router_test

// Review tests: defects found in route_read_statements.

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
)

// wantsReplica looks ahead to the Sync for a Parse or Bind of a plain read
// (onlyReadsFollow), but sends a simple Query of one to a replica whatever
// the client pipelined behind it: a write sent in the same write as the
// read then runs on the replica, linked while the read's answer is owed,
// and fails there (25006).
func TestReviewAWritePipelinedBehindASimpleQueryReadRunsOnThePrimary(t *testing.T) {
	t.Skip("defect: wantsReplica sends a simple Query of a plain read to a replica without looking at what is pipelined behind it (onlyReadsFollow covers Parse and Bind only)")
	primary, replica := startReplicated(t)
	f := ferrytest.Start(t, replicaConfig(t, primary, replica, func(db *configs.Database) { db.RouteReadStatements = true }))
	ctx := testContext(t)
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := conn.Exec(ctx, "create table review_routed (x int)"); err != nil {
		t.Fatal(err)
	}
	c := newRawClient(t, f.AppDSN())
	ferrytest.Eventually(t, 20*time.Second, "a read to run on the replica, which has the table", func() (bool, error) {
		c.send(&pgproto3.Query{String: "select inet_server_port() from (select count(*) from review_routed) t"})
		return c.until(1) == "T D:"+strconv.Itoa(replica.Port)+" C Z", nil
	})
	c.send(
		&pgproto3.Query{String: "select inet_server_port()"},
		&pgproto3.Query{String: "insert into review_routed values (1) returning inet_server_port()"},
	)
	got := c.until(2)
	if !strings.HasSuffix(got, " T D:"+strconv.Itoa(primary.Port)+" C Z") {
		t.Fatalf("a read and a write pipelined by simple query: %s; want the write run on the primary (port %d; the replica's is %d)", got, primary.Port, replica.Port)
	}
}

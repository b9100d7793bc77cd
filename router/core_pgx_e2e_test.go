package router_test

// End-to-end tests of pgx through pgferry: every query exec mode, batches
// and pipelines with several Syncs, CopyFrom.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// connectInMode is ferrytest.Connect with pgx's default query exec mode
// set to mode.
func connectInMode(t *testing.T, ctx context.Context, dsn string, mode pgx.QueryExecMode) *pgx.Conn {
	t.Helper()
	cc, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cc.DefaultQueryExecMode = mode
	return ferrytest.ConnectConfig(t, ctx, cc)
}

func TestPgxQueryExecModesRoundTripValuesThroughPgferry(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	tests := []struct {
		name string
		mode pgx.QueryExecMode
	}{
		{"simple protocol", pgx.QueryExecModeSimpleProtocol},
		{"exec", pgx.QueryExecModeExec},
		{"cache statement", pgx.QueryExecModeCacheStatement},
		{"cache describe", pgx.QueryExecModeCacheDescribe},
		{"describe exec", pgx.QueryExecModeDescribeExec},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn := connectInMode(t, ctx, f.AppDSN(), tc.mode)
			// Several rounds, so cached statements are reused on whatever
			// server connection each transaction gets.
			for i := range 20 {
				var sum int
				var text string
				var null *string
				var blob []byte
				err := conn.QueryRow(ctx, "select $1::int + $2::int, $3::text || '✓', null::text, decode($4, 'hex')",
					i, 40, "pgferry", "00ff10").Scan(&sum, &text, &null, &blob)
				if err != nil {
					t.Fatalf("round %d: %v", i, err)
				}
				if sum != i+40 || text != "pgferry✓" || null != nil || !bytes.Equal(blob, []byte{0, 0xff, 0x10}) {
					t.Fatalf("round %d: got %d %q %v %x", i, sum, text, null, blob)
				}
			}
			rows, err := conn.Query(ctx, "select g from generate_series(1, $1::int) g", 3000)
			if err != nil {
				t.Fatal(err)
			}
			got, err := pgx.CollectRows(rows, pgx.RowTo[int32])
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 3000 || got[0] != 1 || got[2999] != 3000 {
				t.Fatalf("generate_series: got %d rows", len(got))
			}
			// An error leaves the session usable.
			_, err = conn.Exec(ctx, "select 1/$1::int", 0)
			expectPgError(t, err, "22012")
			var n int
			if err := conn.QueryRow(ctx, "select $1::int", 7).Scan(&n); err != nil || n != 7 {
				t.Fatalf("after an error: %d %v", n, err)
			}
		})
	}
}

func TestPgxBatchAndPipelineWithSeveralSyncsReturnEveryResultInOrder(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 2)
	f := ferrytest.Start(t, cfg)
	setup := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := setup.Exec(ctx, "create table batch_items (id int primary key, name text)"); err != nil {
		t.Fatal(err)
	}

	modes := []struct {
		name string
		mode pgx.QueryExecMode
	}{
		{"simple protocol", pgx.QueryExecModeSimpleProtocol},
		{"exec", pgx.QueryExecModeExec},
		{"cache statement", pgx.QueryExecModeCacheStatement},
		{"cache describe", pgx.QueryExecModeCacheDescribe},
	}
	for i, tc := range modes {
		t.Run("batch "+tc.name, func(t *testing.T) {
			conn := connectInMode(t, ctx, f.AppDSN(), tc.mode)
			base := (i + 1) * 100
			for round := range 3 {
				b := &pgx.Batch{}
				b.Queue("insert into batch_items values ($1, $2)", base+round*10, "a")
				b.Queue("insert into batch_items values ($1, $2)", base+round*10+1, "b")
				b.Queue("select count(*) from batch_items where id between $1 and $2", base+round*10, base+round*10+9)
				b.Queue("select name from batch_items where id = $1", base+round*10+1)
				br := conn.SendBatch(ctx, b)
				for q := range 2 {
					if _, err := br.Exec(); err != nil {
						t.Fatalf("round %d insert %d: %v", round, q, err)
					}
				}
				var n int
				if err := br.QueryRow().Scan(&n); err != nil || n != 2 {
					t.Fatalf("round %d count: %d %v", round, n, err)
				}
				var name string
				if err := br.QueryRow().Scan(&name); err != nil || name != "b" {
					t.Fatalf("round %d name: %q %v", round, name, err)
				}
				if err := br.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}

	t.Run("pipeline with an error in the middle segment", func(t *testing.T) {
		conn := ferrytest.Connect(t, ctx, f.AppDSN())
		p := conn.PgConn().StartPipeline(ctx)
		p.SendQueryParams("select $1::int", [][]byte{[]byte("1")}, nil, nil, nil)
		if err := p.Sync(); err != nil {
			t.Fatal(err)
		}
		p.SendPrepare("core_pipeline_stmt", "select $1::int * 2", nil)
		p.SendQueryParams("select 1/0", nil, nil, nil, nil)
		p.SendQueryParams("select 'skipped'", nil, nil, nil, nil)
		if err := p.Sync(); err != nil {
			t.Fatal(err)
		}
		p.SendQueryPrepared("core_pipeline_stmt", [][]byte{[]byte("21")}, nil, nil)
		p.SendQueryParams("select 'third'", nil, nil, nil, nil)
		if err := p.Sync(); err != nil {
			t.Fatal(err)
		}

		var got []string
		for {
			res, err := p.GetResults()
			if err != nil {
				var pe *pgconn.PgError
				if errors.As(err, &pe) {
					got = append(got, "error "+pe.Code)
					continue
				}
				t.Fatalf("after %v: %v", got, err)
			}
			if res == nil {
				break
			}
			switch r := res.(type) {
			case *pgconn.ResultReader:
				rr := r.Read()
				if rr.Err != nil {
					var pe *pgconn.PgError
					if errors.As(rr.Err, &pe) {
						got = append(got, "error "+pe.Code)
						continue
					}
					t.Fatalf("after %v: %v", got, rr.Err)
				}
				for _, row := range rr.Rows {
					got = append(got, string(row[0]))
				}
			case *pgconn.StatementDescription:
				got = append(got, fmt.Sprintf("prepared with %d parameter(s)", len(r.ParamOIDs)))
			case *pgconn.PipelineSync:
				got = append(got, "sync")
			}
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		// The failing segment's prepare ran before the error; the query after
		// the error is skipped up to the Sync; the next segment works.
		want := []string{"1", "sync", "prepared with 1 parameter(s)", "error 22012", "sync", "42", "third", "sync"}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("pipeline results:\n got %q\nwant %q", got, want)
		}
		var n int
		if err := conn.QueryRow(ctx, "select 5").Scan(&n); err != nil || n != 5 {
			t.Fatalf("after the pipeline: %d %v", n, err)
		}
	})
}

func TestCopyFromTenThousandRowsArrivesComplete(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	f := ferrytest.Start(t, cfg)
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := conn.Exec(ctx, "create table copy_in (id int, label text, payload bytea)"); err != nil {
		t.Fatal(err)
	}
	const n = 10000
	rows := make([][]any, n)
	for i := range rows {
		rows[i] = []any{i, fmt.Sprintf("row %d ✓", i), bytes.Repeat([]byte{byte(i)}, i%300)}
	}
	copied, err := conn.CopyFrom(ctx, pgx.Identifier{"copy_in"}, []string{"id", "label", "payload"}, pgx.CopyFromRows(rows))
	if err != nil {
		t.Fatal(err)
	}
	if copied != n {
		t.Fatalf("CopyFrom reported %d rows, want %d", copied, n)
	}
	var count, sumID, sumLen int64
	if err := conn.QueryRow(ctx, "select count(*), sum(id), sum(length(payload)) from copy_in").Scan(&count, &sumID, &sumLen); err != nil {
		t.Fatal(err)
	}
	var wantLen int64
	for i := range n {
		wantLen += int64(i % 300)
	}
	if count != n || sumID != n*(n-1)/2 || sumLen != wantLen {
		t.Fatalf("got count %d, sum(id) %d, payload bytes %d; want %d, %d, %d", count, sumID, sumLen, n, n*(n-1)/2, wantLen)
	}
	// A failing COPY (duplicate key) is reported and leaves the session usable.
	if _, err := conn.Exec(ctx, "alter table copy_in add primary key (id)"); err != nil {
		t.Fatal(err)
	}
	_, err = conn.CopyFrom(ctx, pgx.Identifier{"copy_in"}, []string{"id", "label", "payload"}, pgx.CopyFromRows(rows[:10]))
	expectPgError(t, err, "23505")
	if err := conn.QueryRow(ctx, "select count(*) from copy_in").Scan(&count); err != nil || count != n {
		t.Fatalf("after the failed COPY: %d %v", count, err)
	}
}

package admin

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/protocol"
)

// showTyped runs query on a console over b and returns its columns as
// "name:oid" and its rows with NULL spelled NULL, which describe does not
// tell from "".
func showTyped(t *testing.T, b *fakeBackend, query string) (cols []string, rows []string) {
	t.Helper()
	s := &fakeSession{}
	b.pools.session = s
	var out bytes.Buffer
	rd, wr := protocol.NewReader(&script{steps: []any{frames(t, &pgproto3.Query{String: query})}}), protocol.NewWriter(&out)
	defer rd.Release()
	defer wr.Release()
	if err := New(Config{Backend: b, Session: s, Reader: rd, Writer: wr}).Serve(nil); !errors.Is(err, ErrDone) {
		t.Fatalf("Serve = %v", err)
	}
	fe := pgproto3.NewFrontend(bytes.NewReader(out.Bytes()), io.Discard)
	for {
		m, err := fe.Receive()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return cols, rows
		}
		if err != nil {
			t.Fatalf("decode console output: %v", err)
		}
		switch m := m.(type) {
		case *pgproto3.RowDescription:
			for _, f := range m.Fields {
				cols = append(cols, fmt.Sprintf("%s:%d", f.Name, f.DataTypeOID))
			}
		case *pgproto3.DataRow:
			var vals []string
			for _, v := range m.Values {
				if v == nil {
					vals = append(vals, "NULL")
				} else {
					vals = append(vals, string(v))
				}
			}
			rows = append(rows, strings.Join(vals, "|"))
		case *pgproto3.ErrorResponse:
			t.Fatalf("%s: %s %s", query, m.Code, m.Message)
		}
	}
}

// pgBouncer125Columns are the columns PgBouncer 1.25.2 answers each SHOW
// command with, name:type OID, in its order: read from the binary by hand
// (pgconn's FieldDescriptions over its console), as PgBouncer's admin.c and
// stats.c at the pgbouncer_1_25_2 tag write them.
var pgBouncer125Columns = map[string]string{
	"POOLS": "database:25,user:25,cl_active:23,cl_waiting:23,cl_active_cancel_req:23,cl_waiting_cancel_req:23," +
		"sv_active:23,sv_active_cancel:23,sv_being_canceled:23,sv_idle:23,sv_used:23,sv_tested:23,sv_login:23," +
		"maxwait:23,maxwait_us:23,pool_mode:25,load_balance_hosts:25",
	"STATS": "database:25,total_server_assignment_count:1700,total_xact_count:1700,total_query_count:1700," +
		"total_received:1700,total_sent:1700,total_xact_time:1700,total_query_time:1700,total_wait_time:1700," +
		"total_client_parse_count:1700,total_server_parse_count:1700,total_bind_count:1700," +
		"avg_server_assignment_count:1700,avg_xact_count:1700,avg_query_count:1700,avg_recv:1700,avg_sent:1700," +
		"avg_xact_time:1700,avg_query_time:1700,avg_wait_time:1700," +
		"avg_client_parse_count:1700,avg_server_parse_count:1700,avg_bind_count:1700",
	"STATS_TOTALS": "database:25,server_assignment_count:1700,xact_count:1700,query_count:1700,bytes_received:1700," +
		"bytes_sent:1700,xact_time:1700,query_time:1700,wait_time:1700,client_parse_count:1700,server_parse_count:1700,bind_count:1700",
	"STATS_AVERAGES": "database:25,server_assignment_count:1700,xact_count:1700,query_count:1700,bytes_received:1700," +
		"bytes_sent:1700,xact_time:1700,query_time:1700,wait_time:1700," +
		"avg_client_parse_count:1700,avg_server_parse_count:1700,avg_bind_count:1700",
	"TOTALS": "name:25,value:1700",
	"CLIENTS": "type:25,user:25,database:25,replication:25,state:25,addr:25,port:23,local_addr:25,local_port:23," +
		"connect_time:25,request_time:25,wait:23,wait_us:23,close_needed:23,ptr:25,link:25,remote_pid:23,tls:25," +
		"application_name:25,prepared_statements:23,id:23",
	"SERVERS": "type:25,user:25,database:25,replication:25,state:25,addr:25,port:23,local_addr:25,local_port:23," +
		"connect_time:25,request_time:25,wait:23,wait_us:23,close_needed:23,ptr:25,link:25,remote_pid:23,tls:25," +
		"application_name:25,prepared_statements:23,id:23",
	"DATABASES": "name:25,host:25,port:23,database:25,force_user:25,pool_size:23,min_pool_size:23,reserve_pool_size:23," +
		"server_lifetime:23,pool_mode:25,load_balance_hosts:25,max_connections:23,current_connections:23," +
		"max_client_connections:23,current_client_connections:23,paused:23,disabled:23",
	"USERS": "name:25,pool_size:25,reserve_pool_size:25,pool_mode:25,max_user_connections:23,current_connections:23," +
		"max_user_client_connections:23,current_client_connections:23",
	"LISTS":   "list:25,items:23",
	"CONFIG":  "key:25,value:25,default:25,changeable:25",
	"VERSION": "version:25",
	"STATE":   "key:25,value:25",
	"PEERS":   "peer_id:23,host:25,port:23,pool_size:23",
}

// TestColumnsArePgBouncer125s: every SHOW command PgBouncer 1.25.2 and
// pgferry both answer begins with 1.25.2's columns, names, order and types,
// pgferry's own following; pgbouncer_exporter and scripts written for 1.25
// read them by name or by position. The one difference: SHOW CLIENTS' and
// SERVERS' id is numeric, pgferry's ids being 64-bit.
func TestColumnsArePgBouncer125s(t *testing.T) {
	differ := map[string]string{"CLIENTS id:23": "id:1700", "SERVERS id:23": "id:1700"}
	for _, cmd := range slices.Sorted(maps.Keys(pgBouncer125Columns)) {
		t.Run(cmd, func(t *testing.T) {
			want := strings.Split(pgBouncer125Columns[cmd], ",")
			for i, c := range want {
				if d, ok := differ[cmd+" "+c]; ok {
					want[i] = d
				}
			}
			got, _ := showTyped(t, newFakeBackend(), "SHOW "+cmd)
			if len(got) < len(want) || !slices.Equal(got[:len(want)], want) {
				t.Errorf("columns\n got %q\nwant %q first", got, want)
			}
		})
	}
}

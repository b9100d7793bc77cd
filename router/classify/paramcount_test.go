package classify

import "testing"

func TestParamCountReadsOnlyParametersOutsideQuotesAndComments(t *testing.T) {
	tests := []struct {
		name string
		sql  string
		want int
	}{
		{name: "none", sql: "select 1", want: 0},
		{name: "one", sql: "select set_config('a', $1, false)", want: 1},
		{name: "highest, not how many", sql: "select $3, $1", want: 3},
		{name: "at the end", sql: "select $12", want: 12},
		{name: "in a string", sql: "select '$4', $1", want: 1},
		{name: "in a doubled-quote string", sql: "select 'a''$4', $1", want: 1},
		{name: "in an escape string", sql: `select E'\'$4', $2`, want: 2},
		{name: "in a quoted identifier", sql: `select "$4", $1`, want: 1},
		{name: "in a line comment", sql: "select $1 -- $4\n, $2", want: 2},
		{name: "in a block comment", sql: "select /* $4 /* $5 */ $6 */ $1", want: 1},
		{name: "in a dollar quote", sql: "select $q$ $4 $q$, $$ $5 $$, $1", want: 1},
		{name: "in an identifier", sql: "select a$4, $1", want: 1},
		{name: "a cast", sql: "select $2::text", want: 2},
		{name: "an unterminated string", sql: "select $1, '$4", want: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ParamCount([]byte(tc.sql)); got != tc.want {
				t.Errorf("ParamCount(%q) = %d, want %d", tc.sql, got, tc.want)
			}
		})
	}
}

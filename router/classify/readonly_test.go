package classify

import "testing"

func TestLiftsReadOnlyFindsEveryStatementThatLetsAReadOnlySessionWrite(t *testing.T) {
	tests := []struct {
		sql  string
		want bool
	}{
		{"BEGIN READ WRITE", true},
		{"begin isolation level serializable, read write", true},
		{"start transaction read write", true},
		{"START /* c */ TRANSACTION READ\nWRITE;", true},
		{"set transaction read write", true},
		{"SET LOCAL TRANSACTION READ WRITE", true},
		{"set session transaction read write", true},
		{"SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", true},
		{"set default_transaction_read_only = off; commit; insert into t values (1)", true},
		{"select 1; SET default_transaction_read_only TO DEFAULT", true},
		{"set session default_transaction_read_only = 'off'", true},
		{"set local transaction_read_only = false", true},
		{"SET transaction_read_only TO 0", true},
		{"reset default_transaction_read_only", true},
		{"RESET transaction_read_only", true},
		{"reset all", true},
		{"discard all", true},
		{`set "default_transaction_read_only" = off`, true},
		{`reset "default_transaction_read_only"`, true},
		{`set U&"default_transaction_read_onl\0079" = off`, true},
		{"select set_config('default_transaction_read_only', 'off', false)", true},
		{"select 1; select set_config('transaction_read_only', 'off', $1)", true},
		{`select U&"set\005fconfig"('x', 'y', true)`, true},
		{"do $$begin perform set_config('default_transaction_read_only', 'off', false); end$$", true},
		{`select 'x\' ; select '; reset all; select 1'`, true}, // standard_conforming_strings off

		{"BEGIN", false},
		{"begin read only", false},
		{"begin isolation level repeatable read", false},
		{"start transaction read only, deferrable", false},
		{"set transaction isolation level serializable", false},
		{"set transaction read only", false},
		{"SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", false},
		{"set default_transaction_read_only = on", false},
		{"set default_transaction_read_only to 'true'", false},
		{"set search_path = app", false},
		{"reset search_path", false},
		{"discard plans", false},
		{"select read_only from t", false},
		{"select 'begin read write'", false},
		{"select set_config('default_transaction_read_only', 'off', true)", false},
		{"select set_config('app.tenant', '42', false)", false},
		{"do $$begin raise notice 'hi'; end$$", false},
		{"insert into t values (1)", false},
	}
	for _, tc := range tests {
		if got := LiftsReadOnly([]byte(tc.sql)); (got != "") != tc.want {
			t.Errorf("LiftsReadOnly(%q) = %q, want a reason: %v", tc.sql, got, tc.want)
		}
	}
}

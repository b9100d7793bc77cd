package classify

import "testing"

// A DEALLOCATE of one name reports the name as PostgreSQL reads it, so
// that the router can match it against the client's protocol-level
// statements; ALL, reserved names, names it cannot read and queries of
// several statements report none.
func TestADeallocateOfOneNameReportsTheNameAsPostgreSQLReadsIt(t *testing.T) {
	tests := []struct{ sql, name string }{
		{"deallocate _pg3_0", "_pg3_0"},
		{"DEALLOCATE _PG3_0;", "_pg3_0"},
		{"deallocate prepare s1", "s1"},
		{"DEALLOCATE PREPARE \"S1\" ; ", "S1"},
		{"deallocate \"a \"\"b\"\"\"", `a "b"`},
		{"deallocate prepare", "prepare"},
		{"deallocate prepare prepare", "prepare"},
		{"deallocate /* c */ s -- d", "s"},
		{`deallocate U&"d\0061t\+000061"`, "data"},
		{"deallocate all", ""},
		{"deallocate prepare all", ""},
		{"deallocate \"all\"", "all"},
		{"deallocate pgferry_1", ""},
		{"deallocate prepare PGFERRY_1", ""},
		{"deallocate s t", ""},
		{"deallocate s; select 1", ""},
		{"select 1; deallocate s", ""},
		{"deallocate", ""},
	}
	for _, tc := range tests {
		c := SQL([]byte(tc.sql))
		if c.Deallocate != tc.name {
			t.Errorf("SQL(%q).Deallocate = %q, want %q", tc.sql, c.Deallocate, tc.name)
		}
		if !Needed([]byte(tc.sql)) {
			t.Errorf("Needed(%q) = false", tc.sql)
		}
		if tc.name != "" && !c.ChangesState() {
			t.Errorf("SQL(%q).ChangesState() = false: its Execute would not see it", tc.sql)
		}
	}
}

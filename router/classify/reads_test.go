package classify

import "testing"

// TestBeginsReadOnlyReadsTheModesNotTheText: READ ONLY counts only as the
// words of a transaction mode; in a comment or a quoted identifier it is
// not one (the routing of a BEGIN to a replica follows it).
func TestBeginsReadOnlyReadsTheModesNotTheText(t *testing.T) {
	tests := []struct {
		sql  string
		want bool
	}{
		{"BEGIN READ ONLY", true},
		{"begin read only;", true},
		{"START TRANSACTION READ ONLY", true},
		{"start transaction isolation level repeatable read, read only", true},
		{"BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE", true},
		{"BEGIN ISOLATION LEVEL READ COMMITTED, READ ONLY", true},
		{"begin work read only", true},
		{"BEGIN TRANSACTION READ ONLY", true},
		{"BEGIN /* a comment */ READ /* another */ ONLY", true},
		{"BEGIN -- a comment\nREAD\tONLY", true},
		{"BEGIN READ\n\nONLY; SELECT 1", true},
		{"BEGIN /* not read only */", false},
		{"BEGIN -- read only\n", false},
		{"BEGIN /* /* nested */ read only */ ISOLATION LEVEL SERIALIZABLE", false},
		{`BEGIN; SELECT 1 AS "read only"`, false},
		{"BEGIN; SELECT 'read only'", false},
		{"BEGIN ISOLATION LEVEL READ COMMITTED", false},
		{"BEGIN READ WRITE", false},
		{"BEGIN READ ONLY, READ WRITE", false},
		{"BEGIN", false},
		{"START TRANSACTION", false},
		{"START READ ONLY", false},
		{"SELECT 'BEGIN READ ONLY'", false},
		{"BEGIN ISOLATION LEVEL READ UNCOMMITTED; SET TRANSACTION READ ONLY", false},
		{"BEGINREAD ONLY", false},
		{"BEGIN READ ONLYX", false},
	}
	for _, tc := range tests {
		if got := BeginsReadOnly([]byte(tc.sql)); got != tc.want {
			t.Errorf("BeginsReadOnly(%q) = %v, want %v", tc.sql, got, tc.want)
		}
	}
}

func TestBeginsReadOnlyDoesNotAllocate(t *testing.T) {
	sql := []byte("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY NOT DEFERRABLE")
	if n := testing.AllocsPerRun(100, func() { benchBool = BeginsReadOnly(sql) }); n != 0 {
		t.Errorf("%.1f allocs, want 0", n)
	}
}

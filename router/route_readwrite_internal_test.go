package router

import "testing"

func TestBeginsReadWriteFindsTheModeAcrossSpaceCaseAndComments(t *testing.T) {
	tests := []struct {
		sql  string
		want bool
	}{
		{"begin read write", true},
		{"BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE", true},
		{"start transaction read\n\twrite", true},
		{"begin /* a comment */ read -- another\n write;", true},
		{"begin read /* nested /* comment */ still */ write", true},
		{"begin work read write", true},
		{"begin", false},
		{"begin read only", false},
		{"begin /* read write */ read only", false},
		{"begin -- read write\n read only", false},
		{"begin; select 'read write'", false},
		{"start read write", false},
		{"select 'begin read write'", false},
		{"", false},
	}
	for _, tc := range tests {
		if got := beginsReadWrite([]byte(tc.sql)); got != tc.want {
			t.Errorf("beginsReadWrite(%q) = %v, want %v", tc.sql, got, tc.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { beginsReadWrite([]byte("BEGIN ISOLATION LEVEL READ COMMITTED, READ WRITE")) }); n != 0 {
		t.Errorf("beginsReadWrite allocates %v times", n)
	}
}

package prepared

import (
	"sync"
	"testing"
)

func body(q string) []byte { return append([]byte(q), 0, 0, 0) }

// collide puts every statement on one hash value.
func collide([]byte) uint64 { return 42 }

func TestStatementsWithTheSameHashKeepDistinctIdentities(t *testing.T) {
	r := NewRegistry(collide)
	a := r.Acquire(body("SELECT 'a'"))
	b := r.Acquire(body("SELECT 'b'"))
	if a == b || a.ID == b.ID || a.Name == b.Name {
		t.Fatalf("two statements with one hash share an identity: %q (%d) and %q (%d)", a.Name, a.ID, b.Name, b.ID)
	}
	if got := string(a.Query()); got != "SELECT 'a'" {
		t.Errorf("a.Query() = %q", got)
	}
	if got := string(b.Query()); got != "SELECT 'b'" {
		t.Errorf("b.Query() = %q", got)
	}
	if again := r.Acquire(body("SELECT 'b'")); again != b {
		t.Errorf("the same content acquired again got %q, want %q", again.Name, b.Name)
	}
}

func TestParameterTypesArePartOfAStatementsIdentity(t *testing.T) {
	r := NewRegistry(collide)
	untyped := r.Acquire([]byte("SELECT $1\x00\x00\x00"))
	int4 := r.Acquire([]byte("SELECT $1\x00\x00\x01\x00\x00\x00\x17"))
	if untyped == int4 {
		t.Fatal("SELECT $1 with and without a declared int4 parameter share a statement")
	}
}

func TestReleasingTheLastHolderUnregistersAStatementAndItsIDIsNeverReused(t *testing.T) {
	r := NewRegistry(collide)
	a := r.Acquire(body("SELECT 1"))
	a2 := r.Acquire(body("SELECT 1"))
	b := r.Acquire(body("SELECT 2"))
	r.Release(a)
	if r.Len() != 2 {
		t.Fatalf("after one of two holders released, Len = %d, want 2", r.Len())
	}
	r.Release(a2)
	if r.Len() != 1 {
		t.Fatalf("after both holders released, Len = %d, want 1", r.Len())
	}
	c := r.Acquire(body("SELECT 1"))
	if c.ID == a.ID || c.ID == b.ID {
		t.Fatalf("re-registered statement reused ID %d", c.ID)
	}
	r.Release(b)
	r.Release(c)
	if r.Len() != 0 {
		t.Fatalf("Len = %d after every holder released, want 0", r.Len())
	}
	r.Release(c) // one release too many must not corrupt the registry
	if d := r.Acquire(body("SELECT 3")); string(d.Query()) != "SELECT 3" || r.Len() != 1 {
		t.Fatalf("registry corrupted by an extra release")
	}
}

func TestAcquireCopiesTheBody(t *testing.T) {
	r := NewRegistry(nil)
	b := body("SELECT 1")
	s := r.Acquire(b)
	b[0] = 'X'
	if string(s.Query()) != "SELECT 1" {
		t.Fatalf("statement changed with the caller's buffer: %q", s.Query())
	}
}

func TestConcurrentHoldersAgreeOnOneStatement(t *testing.T) {
	r := NewRegistry(collide)
	var wg sync.WaitGroup
	got := make([]*Statement, 16)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = r.Acquire(body("SELECT 'shared'"))
			r.Acquire(body("SELECT 'other'"))
		}()
	}
	wg.Wait()
	for _, s := range got[1:] {
		if s != got[0] {
			t.Fatal("concurrent acquires of one content got different statements")
		}
	}
	if r.Len() != 2 {
		t.Fatalf("Len = %d, want 2", r.Len())
	}
}

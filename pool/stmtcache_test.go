package pool_test

import (
	"testing"

	"github.com/pgferry/pgferry/pool"
)

func TestStmtCacheRestoreUndoesAnEvictionAsTheLeastRecentlyUsed(t *testing.T) {
	var c pool.StmtCache
	c.SetMax(2)
	c.Add(1)
	c.Add(2)
	if old, evicted := c.Add(3); !evicted || old != 1 {
		t.Fatalf("adding a third evicted %d (%v), want 1", old, evicted)
	}
	// The server skipped the Close of 1 and the Parse of 3: undo both.
	c.Remove(3)
	c.Restore(1)
	if c.Len() != 2 || !c.Has(2) {
		t.Fatalf("after the undo: %d cached", c.Len())
	}
	c.Restore(2) // cached already: stays where it is
	if old, evicted := c.Add(4); !evicted || old != 1 {
		t.Fatalf("the next eviction took %d (%v), want the restored 1, the least recently used", old, evicted)
	}
	if c.Has(1) || !c.Has(2) || !c.Has(4) || c.Len() != 2 {
		t.Fatal("wrong statements cached after the eviction")
	}
	var empty pool.StmtCache
	empty.Restore(7)
	if !empty.Has(7) || empty.Len() != 1 {
		t.Fatal("Restore into an empty cache")
	}
	if old, evicted := empty.Add(8); evicted {
		t.Fatalf("an unbounded cache evicted %d", old)
	}
}

func TestStmtCacheDrainGivesTheStatementsMostRecentFirstAndRestorePutsThemBackInThatOrder(t *testing.T) {
	var c pool.StmtCache
	c.SetMax(3)
	c.Add(1)
	c.Add(2)
	c.Add(3)
	c.Has(1) // 1 2 3 used in the order 2, 3, 1
	keys := c.Drain(nil)
	if len(keys) != 3 || keys[0] != 1 || keys[1] != 3 || keys[2] != 2 || c.Len() != 0 || c.Has(1) {
		t.Fatalf("drained %v, leaving %d cached", keys, c.Len())
	}
	// A drop that failed: a statement prepared behind it stays the most
	// recently used, and the drained ones follow in their order.
	c.Add(4)
	for _, k := range keys {
		c.Restore(k)
	}
	for _, want := range []uint64{2, 3, 1} {
		if old, evicted := c.Add(uint64(10 + want)); !evicted || old != want {
			t.Fatalf("evicted %d (%v), want %d", old, evicted, want)
		}
	}
}

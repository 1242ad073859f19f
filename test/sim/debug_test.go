package sim

import "testing"

func TestDebugStuck(t *testing.T) {
	o := DefaultOptions()
	o.Seed = 2
	o.Strategy = "silent"
	res := Result{Seed: o.Seed, Drops: map[string]int{}}
	w, _ := newWorld(o, &res)
	w.run()
	for i, n := range w.nodes[:w.n] {
		if r, ok := n.(*replicaNode); ok {
			t.Logf("replica %d: %+v", i, r.core.Status())
			t.Logf("  %s", r.core.Debug())
		}
	}
	for _, c := range w.clients {
		t.Logf("client %d done=%d out=%v", c.id, c.done, c.out != nil)
	}
}

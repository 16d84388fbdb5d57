//go:build linux

package jepsen

import (
	"log/slog"
	"reflect"
	"slices"
	"testing"
)

// A partition planned after n2 was replaced by n2b cuts the process in
// n2's namespace, by its current raft id.
func TestPartitionAfterReplacementUsesCurrentIDs(t *testing.T) {
	slots := []string{"n1", "n2", "n3"}
	topo := NewTopology("cjt", 99, slots, slog.New(slog.DiscardHandler))
	nodes := newNodeSet(topo, "consentd", slots, t.TempDir(), t.TempDir(), "", Config{}.WithDefaults(), nil, func() int64 { return 0 })
	r := &runner{topo: topo, nodes: nodes, ids: slots}

	n2 := nodes.get("n2")
	n2.vacant = true
	if got := nodes.members(); !reflect.DeepEqual(got, []string{"n1", "n3"}) {
		t.Fatalf("members with n2 vacant: %v", got)
	}
	n2.vacant, n2.gen, n2.id = false, 1, replacementID("n2", 1)
	members := nodes.members()
	if !reflect.DeepEqual(members, []string{"n1", "n2b", "n3"}) || nodes.slotOf("n2b") != "n2" || nodes.slotOf("n2") != "" || nodes.idOf("n2") != "n2b" {
		t.Fatalf("members %v, slot of n2b %q, slot of n2 %q", members, nodes.slotOf("n2b"), nodes.slotOf("n2"))
	}
	g, targets := PlanPartition(PartitionLeader, members, "n2b", stepRand(1, 0))
	if !reflect.DeepEqual(targets, []string{"n2b"}) {
		t.Fatal(targets)
	}
	rules := rulesFor(members, r.ipsByID(), g, 0)
	ip := topo.IPs()
	if got := rules[nodes.idOf("n2")].Blocked; len(got) != 2 || !slices.Contains(got, ip["n1"]) || !slices.Contains(got, ip["n3"]) {
		t.Fatalf("n2b blocks %v", got)
	}
	if got := rules["n1"].Blocked; !reflect.DeepEqual(got, []string{ip["n2"]}) {
		t.Fatalf("n1 blocks %v, want n2's address %s", got, ip["n2"])
	}
}

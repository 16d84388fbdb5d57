package jepsen

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMembershipScenarioIsNotInCI(t *testing.T) {
	if _, ok := LookupScenario("membership"); !ok {
		t.Fatal("no membership scenario")
	}
	if slices.Contains(CIScenarios(), "membership") {
		t.Fatal("membership is in the CI scenarios")
	}
	if !slices.Contains(ScenarioNames(), "membership") {
		t.Fatal("membership is not among all scenarios")
	}
}

func TestMembershipSchedule(t *testing.T) {
	sc, _ := LookupScenario("membership")
	cfg := ScheduleConfig{Duration: 60 * time.Second, ElectionTimeout: 500 * time.Millisecond}
	if a, b := GenerateSchedule(7, sc, cfg), GenerateSchedule(7, sc, cfg); !reflect.DeepEqual(a, b) {
		t.Fatal("same seed, different schedules")
	}
	if reflect.DeepEqual(GenerateSchedule(7, sc, cfg), GenerateSchedule(8, sc, cfg)) {
		t.Fatal("different seeds, same schedule")
	}
	def := cfg.withDefaults()
	targets := map[string]int{}
	for _, d := range []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 60 * time.Second, 5 * time.Minute} {
		for seed := int64(0); seed < 200; seed++ {
			steps := GenerateSchedule(seed, sc, ScheduleConfig{Duration: d, ElectionTimeout: 500 * time.Millisecond})
			if len(steps) == 0 {
				continue
			}
			changes, leaderOut := 0, false
			var end time.Duration
			prevMembership := false
			for i, st := range steps {
				// One change at a time, and none while another fault holds:
				// every step starts after the previous one is healed.
				gap := def.MinGap
				if prevMembership {
					gap += def.RejoinAllowance
				}
				if i > 0 && st.At < end+gap {
					t.Fatalf("%v seed %d step %d at %v overlaps the previous step (healed at %v, gap %v)", d, seed, i, st.At, end, gap)
				}
				end = st.At + st.Hold
				if end > d {
					t.Fatalf("%v seed %d step %d ends after the duration", d, seed, i)
				}
				prevMembership = st.Fault == Membership
				leaderOut = leaderOut || st.replacesLeader()
				switch {
				case st.Fault == Membership:
					changes++
					targets[st.Target]++
					if st.Target != TargetLeader && st.Target != TargetFollower {
						t.Fatalf("%v seed %d step %d: target %q", d, seed, i, st.Target)
					}
				case st.Target != "":
					t.Fatalf("%v seed %d step %d: %s has target %q", d, seed, i, st.Fault, st.Target)
				}
			}
			if changes == 0 {
				t.Fatalf("%v seed %d: no membership change in %v", d, seed, steps)
			}
			if changes > 1 && !leaderOut {
				t.Fatalf("%v seed %d: %d membership changes, none removes the leader: %v", d, seed, changes, steps)
			}
		}
	}
	// Mostly a follower, sometimes the leader.
	if l, f := targets[TargetLeader], targets[TargetFollower]; l == 0 || f < 2*l {
		t.Fatalf("targets: %d leader, %d follower", l, f)
	}
	// Other scenarios neither schedule membership changes nor targets.
	for _, other := range Scenarios() {
		if other.Name == "membership" {
			continue
		}
		for seed := int64(0); seed < 20; seed++ {
			for _, st := range GenerateSchedule(seed, other, cfg) {
				if st.Fault == Membership || st.Target != "" {
					t.Fatalf("%s seed %d: %+v", other.Name, seed, st)
				}
			}
		}
	}
}

func TestEnsureMembershipStep(t *testing.T) {
	sc := Scenario{Name: "x", Faults: []WeightedFault{{Membership, 1}, {KillLeader, 1}}, NeedsLeaderChange: true}
	// The only step forces a leader change: it becomes a removal of the leader.
	one := []Step{{Fault: KillLeader}}
	ensureLeaderFault(one, sc)
	ensureMembershipStep(one, sc)
	if one[0].Fault != Membership || one[0].Target != TargetLeader {
		t.Fatalf("%+v", one)
	}
	two := []Step{{Fault: KillLeader}, {Fault: KillLeader}}
	ensureMembershipStep(two, sc)
	if two[1].Fault != Membership || two[1].Target != TargetFollower || two[0].Fault != KillLeader {
		t.Fatalf("%+v", two)
	}
	// Several follower removals: the last one removes the leader instead.
	several := []Step{{Fault: Membership, Target: TargetFollower}, {Fault: KillFollower}, {Fault: Membership, Target: TargetFollower}}
	ensureMembershipStep(several, sc)
	if several[0].Target != TargetFollower || several[2].Target != TargetLeader {
		t.Fatalf("%+v", several)
	}
	// A forced leader fault replaces a follower removal and clears its target.
	three := []Step{{Fault: Membership, Target: TargetFollower}}
	ensureLeaderFault(three, Scenario{Faults: []WeightedFault{{KillLeader, 1}}, NeedsLeaderChange: true})
	if three[0].Fault != KillLeader || three[0].Target != "" {
		t.Fatalf("%+v", three)
	}
}

func TestPlanMembership(t *testing.T) {
	slots := []string{"n1", "n2", "n3", "n4", "n5"}
	seen := map[string]int{}
	for seed := int64(0); seed < 300; seed++ {
		for i := 0; i < 3; i++ {
			for _, st := range []Step{{Fault: Membership, Target: TargetLeader}, {Fault: Membership, Target: TargetFollower}} {
				a := planMembership(st, slots, "n3", stepRand(seed, i))
				if b := planMembership(st, slots, "n3", stepRand(seed, i)); a != b {
					t.Fatalf("same seed and step, plans %+v and %+v", a, b)
				}
				if st.Target == TargetLeader && a.Target != "n3" || st.Target == TargetFollower && (a.Target == "n3" || !slices.Contains(slots, a.Target)) {
					t.Fatalf("%s step: %+v", st.Target, a)
				}
				if !slices.Contains(slots, a.Via) || a.Proto != "grpc" && a.Proto != "rest" {
					t.Fatalf("%+v", a)
				}
				seen[a.Proto]++
				if a.Via == a.Target {
					seen["self"]++
				}
			}
		}
	}
	if seen["grpc"] == 0 || seen["rest"] == 0 || seen["self"] == 0 || seen["self"] > seen["grpc"] {
		t.Fatalf("%v", seen)
	}
	// No known leader: a leader step still picks someone.
	if p := planMembership(Step{Target: TargetLeader}, slots, "", stepRand(1, 1)); !slices.Contains(slots, p.Target) {
		t.Fatalf("%+v", p)
	}
}

func TestChangeAllowed(t *testing.T) {
	members := []string{"n1", "n2b", "n3"}
	healthy := func() map[string]memberView {
		return map[string]memberView{
			"n1":  {Ready: true, Voters: []string{"n1", "n2b", "n3"}},
			"n2b": {Ready: true, Voters: []string{"n3", "n2b", "n1"}},
			"n3":  {Ready: true, Voters: []string{"n1", "n2b", "n3"}},
		}
	}
	if err := changeAllowed(members, healthy()); err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(map[string]memberView){
		"missing":   func(v map[string]memberView) { delete(v, "n3") },
		"error":     func(v map[string]memberView) { v["n3"] = memberView{Err: errors.New("n3 is paused")} },
		"not ready": func(v map[string]memberView) { x := v["n1"]; x.Ready = false; v["n1"] = x },
		"old voter": func(v map[string]memberView) {
			v["n1"] = memberView{Ready: true, Voters: []string{"n1", "n2", "n2b", "n3"}}
		},
		"too few":  func(v map[string]memberView) { v["n3"] = memberView{Ready: true, Voters: []string{"n1", "n3"}} },
		"nonvoter": func(v map[string]memberView) { x := v["n3"]; x.Others = []string{"n4(nonvoter)"}; v["n3"] = x },
	}
	for name, breakIt := range cases {
		v := healthy()
		breakIt(v)
		if err := changeAllowed(members, v); err == nil {
			t.Errorf("%s: change allowed", name)
		}
	}
}

func TestChangeGuardAdmitsOneChange(t *testing.T) {
	var g changeGuard
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if g.begin("n2") == nil {
				mu.Lock()
				won++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if won != 1 {
		t.Fatalf("%d changes at once", won)
	}
	if err := g.begin("n3"); err == nil || !strings.Contains(err.Error(), "n2") {
		t.Fatalf("second change admitted: %v", err)
	}
	g.end()
	if err := g.begin("n3"); err != nil {
		t.Fatal(err)
	}
}

func TestReplacementID(t *testing.T) {
	for gen, want := range map[int]string{0: "n2", 1: "n2b", 2: "n2c", 25: "n2z", 26: "n2-26"} {
		if got := replacementID("n2", gen); got != want {
			t.Errorf("gen %d: %s, want %s", gen, got, want)
		}
	}
}

func TestIncarnations(t *testing.T) {
	in := incarnationsOf([]NemesisEvent{
		{Time: 30, Phase: PhaseStep, Action: ActionStart, Slot: "n2", Targets: []string{"n2c"}},
		{Time: 10, Phase: PhaseStep, Action: ActionStart, Slot: "n2", Targets: []string{"n2b"}},
		{Time: 20, Phase: PhaseStep, Action: ActionStop, Slot: "n3", Targets: []string{"n3"}},
	})
	for _, c := range []struct {
		slot string
		t    int64
		want string
	}{{"n2", 5, "n2"}, {"n2", 10, "n2b"}, {"n2", 29, "n2b"}, {"n2", 31, "n2c"}, {"n3", 40, "n3"}} {
		if got := in.at(c.slot, c.t); got != c.want {
			t.Errorf("%s at %d: %s, want %s", c.slot, c.t, got, c.want)
		}
	}
}

func TestStaleReadsAcrossReplacement(t *testing.T) {
	var h hist
	h.write(0, "a", 0, 1, TypeOK, 1)
	h.read(1, FStale, "a", 1, 2, 3)
	h.read(1, FStale, "", 0, 6, 7) // the fresh process has not caught up yet
	h.committed("a")
	r := h.report(t)
	expect(t, r, "stale-reads", Fail)
	r.Nemesis = []NemesisEvent{{Time: 5 * sec, Phase: PhaseStep, Fault: Membership, Action: ActionStart, Slot: "n1", Targets: []string{"n1b"}}}
	expect(t, r, "stale-reads", Pass)
}

func TestConvergenceFollowsMembers(t *testing.T) {
	var h hist
	h.write(0, "a", 0, 1, TypeOK, 1)
	h.committed("a")
	r := h.report(t)
	r.Final.Members = []string{"n1", "n2"}
	for id, nf := range r.Final.Nodes {
		nf.Status.MemberIDs = []string{"n1", "n2"}
		r.Final.Nodes[id] = nf
	}
	expect(t, r, "convergence", Pass)
	r.Final.Members = []string{"n1", "n2b"}
	c := expect(t, r, "convergence", Fail)
	if !strings.Contains(strings.Join(c.Problems, "\n"), "final reads are from [n1 n2]") {
		t.Fatal(c.Problems)
	}
	r = h.report(t)
	nf := r.Final.Nodes["n2"]
	nf.Status.MemberIDs = []string{"n1", "n2", "n3"}
	r.Final.Nodes["n2"] = nf
	expect(t, r, "convergence", Fail)
}

func TestReportLogsOfEveryProcess(t *testing.T) {
	r := &Report{Run: RunInfo{Nodes: []string{"n1", "n2", "n3"}}, Final: Final{Members: []string{"n1", "n2c", "n3"}, Retired: []string{"n2", "n2b"}}}
	if got := r.processIDs(); !reflect.DeepEqual(got, []string{"n1", "n2", "n3", "n2c", "n2b"}) {
		t.Fatal(got)
	}
	if got := r.members(); !reflect.DeepEqual(got, []string{"n1", "n2c", "n3"}) {
		t.Fatal(got)
	}
}

func TestEfficacyNeedsACompletedMembershipChange(t *testing.T) {
	var h hist
	h.write(0, "a", 0, 1, TypeOK, 1)
	h.committed("a")
	r := h.report(t)
	r.Run.Schedule = []Step{{Fault: Membership, Target: TargetFollower}}
	expect(t, r, "efficacy", Inconclusive)
	r.Nemesis = []NemesisEvent{{Phase: PhaseStep, Fault: Membership, Action: ActionVoter, Slot: "n2", Targets: []string{"n2b"}}}
	c := expect(t, r, "efficacy", Pass)
	if !strings.Contains(c.Summary, "1 of 1 planned membership changes completed") {
		t.Fatal(c.Summary)
	}
}

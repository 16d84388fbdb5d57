package jepsen

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"
)

// Step is one planned nemesis action: apply Fault at At, heal it Hold later.
// Targets are chosen when the step runs (they depend on who leads then),
// from a random source derived from the seed and the step index.
type Step struct {
	At   time.Duration `json:"at"`
	Hold time.Duration `json:"hold"`
	// Fault is empty for a pure quiet step (scenario "none").
	Fault Fault `json:"fault"`
	// LossPercent is the drop probability of a Loss step.
	LossPercent int `json:"lossPercent,omitempty"`
	// Target of a Membership step: TargetLeader or TargetFollower.
	Target string `json:"target,omitempty"`
}

// Targets of a Membership step.
const (
	TargetLeader   = "leader"
	TargetFollower = "follower"
)

// ScheduleConfig shapes a schedule.
type ScheduleConfig struct {
	Duration        time.Duration
	ElectionTimeout time.Duration
	// WarmUp passes before the first fault.
	WarmUp time.Duration // default 3s
	// MinHold and MaxHold bound how long a fault lasts.
	MinHold, MaxHold time.Duration // default 4s, 9s
	// MinGap and MaxGap bound the healthy time between faults.
	MinGap, MaxGap time.Duration // default 2s, 5s
	// RejoinAllowance is added to the gap after a Membership step: the
	// replaced node joins and catches up after the hold.
	RejoinAllowance time.Duration // default 5s
}

func (c ScheduleConfig) withDefaults() ScheduleConfig {
	if c.WarmUp == 0 {
		c.WarmUp = 3 * time.Second
	}
	if c.MinHold == 0 {
		c.MinHold = 4 * time.Second
	}
	if c.MaxHold == 0 {
		c.MaxHold = 9 * time.Second
	}
	if c.MinGap == 0 {
		c.MinGap = 2 * time.Second
	}
	if c.MaxGap == 0 {
		c.MaxGap = 5 * time.Second
	}
	if c.RejoinAllowance == 0 {
		c.RejoinAllowance = 5 * time.Second
	}
	return c
}

// GenerateSchedule plans the faults of a scenario from a seed: alternating
// fault and healthy windows until Duration, each fault healed before the
// next begins. Pauses last at least four election timeouts so a paused
// leader is replaced; kill-all holds are short (the point is the restart).
// A Membership step removes the leader one time in four, a follower
// otherwise; steps never overlap, so there is one membership change at a
// time and none while another fault is in force.
func GenerateSchedule(seed int64, sc Scenario, cfg ScheduleConfig) []Step {
	cfg = cfg.withDefaults()
	rng := rand.New(rand.NewPCG(uint64(seed), 0x6a6570))
	total := 0
	for _, f := range sc.Faults {
		total += f.Weight
	}
	if total == 0 {
		return nil
	}
	between := func(lo, hi time.Duration) time.Duration {
		if hi <= lo {
			return lo
		}
		return lo + time.Duration(rng.Int64N(int64(hi-lo)))
	}
	var steps []Step
	at := cfg.WarmUp
	for {
		pick := rng.IntN(total)
		var f Fault
		for _, wf := range sc.Faults {
			if pick < wf.Weight {
				f = wf.Fault
				break
			}
			pick -= wf.Weight
		}
		if sc.InTurn {
			f = sc.Faults[len(steps)%len(sc.Faults)].Fault
		}
		hold := between(cfg.MinHold, cfg.MaxHold)
		switch f {
		case PauseLeader, PauseFollower:
			hold = max(hold, 4*cfg.ElectionTimeout)
		case KillAll:
			hold = between(time.Second, 3*time.Second)
		case NewLeaderReads, ResumedLeaderReads:
			hold = trapHold(cfg.ElectionTimeout)
		}
		if at+hold > cfg.Duration {
			break
		}
		st := Step{At: at, Hold: hold, Fault: f}
		gap := between(cfg.MinGap, cfg.MaxGap)
		switch f {
		case Loss:
			st.LossPercent = 10 + rng.IntN(26)
		case Membership:
			st.Target = TargetFollower
			if rng.IntN(4) == 0 {
				st.Target = TargetLeader
			}
			gap += cfg.RejoinAllowance
		}
		steps = append(steps, st)
		at += hold + gap
	}
	ensureLeaderFault(steps, sc)
	ensureMembershipStep(steps, sc)
	return steps
}

// replacesLeader lists faults that always remove the leader for longer
// than an election timeout.
func (f Fault) replacesLeader() bool {
	switch f {
	case PartitionLeader, PauseLeader, KillLeader, KillAll, NewLeaderReads, ResumedLeaderReads:
		return true
	}
	return false
}

// trapHold is how long a trap step (NewLeaderReads, ResumedLeaderReads)
// may take: an election, a probe write, the reads, and a second attempt
// when the first could not set the trap.
func trapHold(electionTimeout time.Duration) time.Duration {
	return max(6*time.Second, 12*electionTimeout)
}

// ensureLeaderFault makes a scenario that needs a leader change schedule
// at least one fault that forces one (the scenario's first such fault, in
// place of the first step), so a short run is not inconclusive by chance.
func ensureLeaderFault(steps []Step, sc Scenario) {
	if !sc.NeedsLeaderChange || len(steps) == 0 {
		return
	}
	var first Fault
	for _, wf := range sc.Faults {
		if wf.Fault.replacesLeader() && first == "" {
			first = wf.Fault
		}
	}
	for _, st := range steps {
		if first == "" || st.replacesLeader() {
			return
		}
	}
	steps[0].Fault, steps[0].LossPercent, steps[0].Target = first, 0, ""
	if first == KillAll {
		steps[0].Hold = min(steps[0].Hold, 3*time.Second)
	}
}

// replacesLeader: the step always removes the leader for longer than an
// election timeout.
func (st Step) replacesLeader() bool {
	return st.Fault.replacesLeader() || st.Fault == Membership && st.Target == TargetLeader
}

// ensureMembershipStep makes a scenario with membership changes schedule
// at least one (the last step becomes one), so a short run is not
// inconclusive by chance, and makes a schedule with several changes remove
// the leader at least once. A converted step removes the leader when it
// was the only one forcing a leader change.
func ensureMembershipStep(steps []Step, sc Scenario) {
	has := false
	for _, wf := range sc.Faults {
		has = has || wf.Fault == Membership && wf.Weight > 0
	}
	if !has || len(steps) == 0 {
		return
	}
	leaderSteps, changes, lastChange, leaderChange := 0, 0, -1, false
	for i, st := range steps {
		if st.Fault == Membership {
			changes++
			lastChange = i
			leaderChange = leaderChange || st.Target == TargetLeader
		}
		if st.replacesLeader() {
			leaderSteps++
		}
	}
	if changes > 1 && !leaderChange {
		steps[lastChange].Target = TargetLeader
	}
	if changes > 0 {
		return
	}
	last := &steps[len(steps)-1]
	target := TargetFollower
	if sc.NeedsLeaderChange && last.replacesLeader() && leaderSteps == 1 {
		target = TargetLeader
	}
	last.Fault, last.LossPercent, last.Target = Membership, 0, target
}

// stepRand is the random source for choosing targets of step i: the same
// seed and schedule pick the same relative targets.
func stepRand(seed int64, i int) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(seed), uint64(i)+1))
}

// Grudge says, per node, whose packets it drops (nftables input hook).
// A symmetric cut between a and b is a in grudge[b] and b in grudge[a].
type Grudge map[string][]string

func (g Grudge) cut(a, b string) {
	g[a] = appendUnique(g[a], b)
	g[b] = appendUnique(g[b], a)
}

func (g Grudge) drop(receiver, sender string) { g[receiver] = appendUnique(g[receiver], sender) }

func appendUnique(s []string, v string) []string {
	for _, x := range s {
		if x == v {
			return s
		}
	}
	return append(s, v)
}

// String renders the grudge deterministically, e.g. "n1<-x{n2,n3} n2<-x{n1}".
func (g Grudge) String() string {
	var parts []string
	for _, n := range sortedKeys(g) {
		from := append([]string(nil), g[n]...)
		sort.Strings(from)
		parts = append(parts, fmt.Sprintf("%s drops {%s}", n, strings.Join(from, ",")))
	}
	return strings.Join(parts, "; ")
}

// PlanPartition decides who drops whom for a partition fault, given the
// nodes and the current leader ("" if none is known). It returns the
// grudge and the nodes the fault is about.
func PlanPartition(f Fault, nodes []string, leader string, rng *rand.Rand) (Grudge, []string) {
	g := Grudge{}
	if leader == "" {
		leader = nodes[rng.IntN(len(nodes))]
	}
	var others []string
	for _, n := range nodes {
		if n != leader {
			others = append(others, n)
		}
	}
	isolate := func(x string) {
		for _, n := range nodes {
			if n != x {
				g.cut(x, n)
			}
		}
	}
	switch f {
	case PartitionLeader:
		isolate(leader)
		return g, []string{leader}
	case PartitionFollower:
		x := others[rng.IntN(len(others))]
		isolate(x)
		return g, []string{x}
	case PartitionMajority:
		shuffled := append([]string(nil), others...)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		minority := shuffled[:(len(nodes)-1)/2]
		if rng.IntN(10) < 7 {
			minority = append([]string{leader}, shuffled[:(len(nodes)-1)/2-1]...)
		}
		in := map[string]bool{}
		for _, n := range minority {
			in[n] = true
		}
		for _, a := range nodes {
			for _, b := range nodes {
				if in[a] && !in[b] {
					g.cut(a, b)
				}
			}
		}
		return g, minority
	case PartitionBridge:
		// The leader is an end; the bridge is a random other node. Ends on
		// the leader's side: the leader plus half of the rest.
		shuffled := append([]string(nil), others...)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		bridge, rest := shuffled[0], shuffled[1:]
		left := append([]string{leader}, rest[:len(rest)/2]...)
		right := rest[len(rest)/2:]
		for _, a := range left {
			for _, b := range right {
				g.cut(a, b)
			}
		}
		return g, []string{bridge}
	case PartitionOneWay:
		// Either nobody hears the leader, or the leader hears nobody.
		if rng.IntN(2) == 0 {
			for _, n := range others {
				g.drop(n, leader)
			}
		} else {
			for _, n := range others {
				g.drop(leader, n)
			}
		}
		return g, []string{leader}
	}
	return g, nil
}

// splitFollowers splits followers, in their order, into nFed fed and the
// rest starved for a new-leader-reads trap: the first split in which every
// fed follower is connected to at least one starved one. ok is false when
// there is none.
func splitFollowers(followers []string, nFed int, connected func(from, to string) bool) (fed, starved []string, ok bool) {
	n := len(followers)
	if nFed <= 0 || nFed >= n {
		return nil, nil, false
	}
	// Combinations of nFed indices in lexicographic order, so the first is
	// followers[:nFed].
	idx := make([]int, nFed)
	for i := range idx {
		idx[i] = i
	}
	for {
		in := make([]bool, n)
		for _, i := range idx {
			in[i] = true
		}
		fed, starved = nil, nil
		for i, f := range followers {
			if in[i] {
				fed = append(fed, f)
			} else {
				starved = append(starved, f)
			}
		}
		good := true
		for _, f := range fed {
			reaches := false
			for _, s := range starved {
				reaches = reaches || connected(f, s)
			}
			good = good && reaches
		}
		if good {
			return fed, starved, true
		}
		i := nFed - 1
		for i >= 0 && idx[i] == n-nFed+i {
			i--
		}
		if i < 0 {
			return nil, nil, false
		}
		idx[i]++
		for j := i + 1; j < nFed; j++ {
			idx[j] = idx[j-1] + 1
		}
	}
}

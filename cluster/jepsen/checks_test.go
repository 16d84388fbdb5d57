package jepsen

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	pat  = "9990000018"
	kind = "scr"
	sec  = int64(time.Second)
)

// hist builds small histories by hand: times are in seconds.
type hist struct {
	ops   []Op
	next  int
	final []DecisionVal
}

func (h *hist) call(inv Op, start float64, typ string, res Op, end float64) {
	inv.Index, inv.Type, inv.Time = h.next, TypeInvoke, int64(start*float64(sec))
	if inv.NHS == "" {
		inv.NHS = pat
	}
	h.next++
	h.ops = append(h.ops, inv)
	if typ == "" {
		return
	}
	res.Index, res.Type, res.Time = inv.Index, typ, int64(end*float64(sec))
	res.Process, res.F, res.NHS, res.Kind, res.Client, res.Node = inv.Process, inv.F, inv.NHS, inv.Kind, inv.Client, inv.Node
	h.ops = append(h.ops, res)
}

func id(token string) string { return "id-" + token }

// write records a write of token (state = "s-"+token, eff = its start) that
// completes with typ; an ok write is acknowledged at version v, and
// becomes current.
func (h *hist) write(proc int, token string, start, end float64, typ string, v uint64) {
	inv := Op{Process: proc, Client: "c", Node: "n1", F: FWrite, Kind: kind, Token: token, State: "s-" + token, EffectiveFrom: int64(start * 1e6)}
	res := Op{}
	switch typ {
	case TypeOK:
		res = Op{DecisionID: id(token), Version: v, Changed: true, Consent: &ConsentVal{Kind: kind, State: "s-" + token, Version: v, DecisionID: id(token)}}
	case TypeFail:
		res = Op{Error: "no leader"}
	case TypeInfo:
		res = Op{Error: "outcome unknown"}
	}
	h.call(inv, start, typ, res, end)
}

// read records a linearizable (or stale) read that saw token at version v.
func (h *hist) read(proc int, f string, token string, v uint64, start, end float64) {
	cv := ConsentVal{Kind: kind, Version: v, State: "implied_core"}
	if token != "" {
		cv.State, cv.DecisionID = "s-"+token, id(token)
	}
	h.call(Op{Process: proc, Client: "c" + string(rune('a'+proc)), Node: "n1", F: f}, start, TypeOK, Op{Consents: []ConsentVal{cv}}, end)
}

func (h *hist) hist(proc int, start, end float64, tokens ...string) {
	var ids []string
	for _, t := range tokens {
		ids = append(ids, id(t))
	}
	h.call(Op{Process: proc, Client: "c", Node: "n1", F: FHist, Kind: kind}, start, TypeOK, Op{Decisions: ids}, end)
}

// committed appends token to the final history.
func (h *hist) committed(tokens ...string) {
	for _, t := range tokens {
		var eff int64
		for _, op := range h.ops {
			if op.Token == t && op.Type == TypeInvoke {
				eff = op.EffectiveFrom
			}
		}
		h.final = append(h.final, DecisionVal{ID: id(t), Kind: kind, State: "s-" + t, Reason: t, Version: uint64(len(h.final) + 1), EffectiveFrom: eff})
	}
}

func (h *hist) report(t *testing.T) *Report {
	t.Helper()
	cur := project(h.final)[len(h.final)]
	state := cur.State
	if state == "" {
		state = "implied_core"
	}
	nf := NodeFinal{
		Status:    StatusVal{AppliedIndex: 10, StateDigest: "abc", State: "leader"},
		Consents:  map[string][]ConsentVal{pat: {{Kind: kind, State: state, Version: cur.Version, DecisionID: cur.ID}}},
		Histories: map[string]map[string][]DecisionVal{pat: {kind: h.final}},
	}
	f := nf
	f.Status.State = "follower"
	return &Report{
		Run:     RunInfo{Scenario: "unit", Nodes: []string{"n1", "n2"}, RecoveryBoundMs: 30000, CheckTimeoutMs: 10000},
		History: h.ops,
		Final:   Final{HealTime: 0, ConvergedAfterMs: 100, Nodes: map[string]NodeFinal{"n1": nf, "n2": f}},
		Logs:    map[string]string{},
	}
}

func verdicts(t *testing.T, r *Report) map[string]CheckResult {
	t.Helper()
	res, _ := Check(r)
	out := map[string]CheckResult{}
	for _, c := range res.Checks {
		out[c.Name] = c
	}
	return out
}

func expect(t *testing.T, r *Report, name, verdict string) CheckResult {
	t.Helper()
	c := verdicts(t, r)[name]
	if c.Verdict != verdict {
		t.Fatalf("%s: verdict %s, want %s; %s %v", name, c.Verdict, verdict, c.Summary, c.Problems)
	}
	return c
}

func TestLinearizableLegalHistories(t *testing.T) {
	t.Run("sequential", func(t *testing.T) {
		var h hist
		h.read(0, FRead, "", 0, 0, 1)
		h.write(0, "a", 1, 2, TypeOK, 1)
		h.read(1, FRead, "a", 1, 3, 4)
		h.write(1, "b", 4, 5, TypeOK, 2)
		h.read(0, FRead, "b", 2, 6, 7)
		h.committed("a", "b")
		expect(t, h.report(t), "linearizable", Pass)
	})
	t.Run("concurrent read may see either", func(t *testing.T) {
		var h hist
		h.write(0, "a", 0, 1, TypeOK, 1)
		h.write(0, "b", 2, 6, TypeOK, 2)
		h.read(1, FRead, "a", 1, 3, 4)
		h.read(2, FRead, "b", 2, 4, 5)
		h.committed("a", "b")
		expect(t, h.report(t), "linearizable", Pass)
	})
	t.Run("info write applied later", func(t *testing.T) {
		var h hist
		h.write(0, "a", 0, 1, TypeInfo, 0)
		h.read(1, FRead, "", 0, 2, 3)
		h.read(1, FRead, "a", 1, 10, 11)
		h.committed("a")
		expect(t, h.report(t), "linearizable", Pass)
	})
	t.Run("info write that never happened", func(t *testing.T) {
		var h hist
		h.write(0, "a", 0, 1, TypeInfo, 0)
		h.write(1, "b", 2, 3, TypeOK, 1)
		h.read(1, FRead, "b", 1, 4, 5)
		h.committed("b")
		expect(t, h.report(t), "linearizable", Pass)
	})
	t.Run("older effective_from does not change the state", func(t *testing.T) {
		var h hist
		h.write(0, "a", 5, 6, TypeOK, 1)
		h.call(Op{Process: 0, F: FWrite, Kind: kind, Token: "b", State: "s-b", EffectiveFrom: 1e6}, 7, TypeOK,
			Op{DecisionID: id("b"), Version: 2, Changed: false, Consent: &ConsentVal{Kind: kind, State: "s-a", Version: 2, DecisionID: id("a")}}, 8)
		h.read(1, FRead, "a", 2, 9, 10)
		h.committed("a", "b")
		expect(t, h.report(t), "linearizable", Pass)
	})
	t.Run("compare-and-set", func(t *testing.T) {
		var h hist
		h.write(0, "a", 0, 1, TypeOK, 1)
		one, zero := uint64(1), uint64(0)
		h.call(Op{Process: 0, F: FCAS, Kind: kind, Token: "b", State: "s-b", EffectiveFrom: 2e6, Expected: &one}, 2, TypeOK,
			Op{DecisionID: id("b"), Version: 2, Changed: true, Consent: &ConsentVal{Kind: kind, State: "s-b", Version: 2, DecisionID: id("b")}}, 3)
		h.call(Op{Process: 1, F: FCAS, Kind: kind, Token: "c", State: "s-c", EffectiveFrom: 4e6, Expected: &zero}, 4, TypeFail, Op{Mismatch: true, Error: "expected version 0"}, 5)
		h.committed("a", "b")
		expect(t, h.report(t), "linearizable", Pass)
	})
}

func TestLinearizableIllegalHistories(t *testing.T) {
	t.Run("stale read after acknowledged write", func(t *testing.T) {
		var h hist
		h.write(0, "a", 0, 1, TypeOK, 1)
		h.read(1, FRead, "", 0, 2, 3)
		h.committed("a")
		c := expect(t, h.report(t), "linearizable", Fail)
		if !strings.Contains(c.Problems[0], "not linearizable") {
			t.Fatal(c.Problems)
		}
	})
	t.Run("read goes back in time", func(t *testing.T) {
		var h hist
		h.write(0, "a", 0, 1, TypeOK, 1)
		h.write(0, "b", 2, 3, TypeOK, 2)
		h.read(1, FRead, "b", 2, 4, 5)
		h.read(2, FRead, "a", 1, 6, 7)
		h.committed("a", "b")
		expect(t, h.report(t), "linearizable", Fail)
	})
	t.Run("compare-and-set refused at the right version", func(t *testing.T) {
		var h hist
		h.write(0, "a", 0, 1, TypeOK, 1)
		one := uint64(1)
		h.call(Op{Process: 1, F: FCAS, Kind: kind, Token: "c", State: "s-c", EffectiveFrom: 4e6, Expected: &one}, 4, TypeFail, Op{Mismatch: true}, 5)
		h.committed("a")
		expect(t, h.report(t), "linearizable", Fail)
	})
	t.Run("write acknowledged with a skipped version", func(t *testing.T) {
		var h hist
		h.write(0, "a", 0, 1, TypeOK, 2)
		h.committed("a")
		expect(t, h.report(t), "linearizable", Fail)
	})
	t.Run("info write seen but absent from the final history", func(t *testing.T) {
		var h hist
		h.write(0, "a", 0, 1, TypeInfo, 0)
		h.read(1, FRead, "a", 1, 2, 3)
		expect(t, h.report(t), "linearizable", Fail)
	})
}

func TestNoLostWrites(t *testing.T) {
	var h hist
	h.write(0, "a", 0, 1, TypeOK, 1)
	h.write(1, "b", 0, 1, TypeInfo, 0)
	h.committed("a", "b")
	expect(t, h.report(t), "no-lost-writes", Pass)

	var lost hist
	lost.write(0, "a", 0, 1, TypeOK, 1)
	lost.write(0, "b", 2, 3, TypeOK, 2)
	lost.committed("b")
	c := expect(t, lost.report(t), "no-lost-writes", Fail)
	if !strings.Contains(strings.Join(c.Problems, "\n"), "acknowledged write a") {
		t.Fatal(c.Problems)
	}

	var twice hist
	twice.write(0, "a", 0, 1, TypeOK, 1)
	twice.committed("a", "a")
	expect(t, twice.report(t), "no-lost-writes", Fail)

	var diverged hist
	diverged.write(0, "a", 0, 1, TypeOK, 1)
	diverged.committed("a")
	r := diverged.report(t)
	n2 := r.Final.Nodes["n2"]
	n2.Histories = map[string]map[string][]DecisionVal{pat: {kind: nil}}
	r.Final.Nodes["n2"] = n2
	expect(t, r, "no-lost-writes", Fail)
}

func TestNoAbortedReads(t *testing.T) {
	var h hist
	h.write(0, "a", 0, 1, TypeFail, 0)
	h.read(1, FRead, "", 0, 2, 3)
	expect(t, h.report(t), "no-aborted-reads", Pass)

	var bad hist
	bad.write(0, "a", 0, 1, TypeFail, 0)
	bad.read(1, FStale, "a", 1, 2, 3)
	bad.committed("a")
	c := expect(t, bad.report(t), "no-aborted-reads", Fail)
	if !strings.Contains(c.Problems[0], "failed") {
		t.Fatal(c.Problems)
	}
}

func TestStaleReads(t *testing.T) {
	var h hist
	h.write(0, "a", 0, 1, TypeOK, 1)
	h.write(0, "b", 2, 3, TypeOK, 2)
	h.read(1, FStale, "", 0, 4, 5) // stale may lag
	h.read(1, FStale, "a", 1, 5, 6)
	h.read(1, FStale, "b", 2, 6, 7)
	h.committed("a", "b")
	expect(t, h.report(t), "stale-reads", Pass)

	var back hist
	back.write(0, "a", 0, 1, TypeOK, 1)
	back.read(1, FStale, "a", 1, 2, 3)
	back.read(1, FStale, "", 0, 4, 5)
	back.committed("a")
	c := expect(t, back.report(t), "stale-reads", Fail)
	if !strings.Contains(c.Problems[0], "went back") {
		t.Fatal(c.Problems)
	}

	var phantom hist
	phantom.write(0, "a", 0, 1, TypeInfo, 0)
	phantom.read(1, FStale, "a", 1, 2, 3)
	expect(t, phantom.report(t), "stale-reads", Fail)

	var wrongVersion hist
	wrongVersion.write(0, "a", 0, 1, TypeOK, 1)
	wrongVersion.write(0, "b", 2, 3, TypeOK, 2)
	wrongVersion.read(1, FStale, "b", 1, 4, 5)
	wrongVersion.committed("a", "b")
	expect(t, wrongVersion.report(t), "stale-reads", Fail)
}

func TestHistoryReads(t *testing.T) {
	var h hist
	h.write(0, "a", 0, 1, TypeOK, 1)
	h.hist(1, 2, 3, "a")
	h.write(0, "b", 4, 6, TypeOK, 2)
	h.hist(1, 5, 5.5, "a") // concurrent with b: may or may not hold it
	h.hist(2, 5, 5.5, "a", "b")
	h.committed("a", "b")
	expect(t, h.report(t), "history-reads", Pass)

	cases := map[string]func(h *hist){
		"not a prefix": func(h *hist) {
			h.write(0, "a", 0, 1, TypeOK, 1)
			h.write(0, "b", 2, 3, TypeOK, 2)
			h.hist(1, 4, 5, "b")
			h.committed("a", "b")
		},
		"misses an acknowledged write": func(h *hist) {
			h.write(0, "a", 0, 1, TypeOK, 1)
			h.hist(1, 2, 3)
			h.committed("a")
		},
		"holds a write from the future": func(h *hist) {
			h.hist(1, 0, 1, "a")
			h.write(0, "a", 2, 3, TypeOK, 1)
			h.committed("a")
		},
		"final order against real time": func(h *hist) {
			h.write(0, "a", 0, 1, TypeOK, 1)
			h.write(0, "b", 2, 3, TypeOK, 2)
			h.committed("b", "a")
		},
	}
	for name, build := range cases {
		t.Run(name, func(t *testing.T) {
			var h hist
			build(&h)
			expect(t, h.report(t), "history-reads", Fail)
		})
	}
}

func TestConvergence(t *testing.T) {
	var h hist
	h.write(0, "a", 0, 1, TypeOK, 1)
	h.committed("a")
	expect(t, h.report(t), "convergence", Pass)
	r := h.report(t)
	n2 := r.Final.Nodes["n2"]
	n2.Status.StateDigest = "def"
	r.Final.Nodes["n2"] = n2
	expect(t, r, "convergence", Fail)
	r = h.report(t)
	r.Final.ConvergedAfterMs = -1
	expect(t, r, "convergence", Fail)
}

func TestLiveness(t *testing.T) {
	var h hist
	h.write(0, "a", 0, 1, TypeOK, 1)
	h.write(0, "b", 11, 12, TypeOK, 2)
	h.committed("a", "b")
	r := h.report(t)
	r.Final.HealTime = 10 * sec
	r.Nemesis = []NemesisEvent{{Time: 5 * sec, Step: 0, Phase: PhaseStart, Fault: PauseLeader}, {Time: 10 * sec, Step: -1, Phase: PhaseHeal}}
	c := expect(t, r, "liveness", Pass)
	if !strings.Contains(c.Summary, "0:pause-leader=0") || !strings.Contains(c.Summary, "2000ms") {
		t.Fatal(c.Summary)
	}
	r.Final.HealTime = 20 * sec
	expect(t, r, "liveness", Fail)
	r.Final.HealTime = 10 * sec
	r.Run.RecoveryBoundMs = 1000
	expect(t, r, "liveness", Fail)
}

func TestNodeLogs(t *testing.T) {
	dir := t.TempDir()
	clean, dirty := filepath.Join(dir, "n1.log"), filepath.Join(dir, "n2.log")
	os.WriteFile(clean, []byte("level=INFO msg=\"leadership confirmed\"\n"), 0o644)
	var h hist
	r := h.report(t)
	r.Logs = map[string]string{"n1": clean}
	expect(t, r, "node-logs", Pass)
	for _, line := range []string{"panic: runtime error: index out of range", "fatal error: concurrent map writes", "WARNING: DATA RACE"} {
		os.WriteFile(dirty, []byte("ok\n"+line+"\n"), 0o644)
		r.Logs = map[string]string{"n1": clean, "n2": dirty}
		c := expect(t, r, "node-logs", Fail)
		if !strings.Contains(c.Problems[0], "n2.log:2") {
			t.Fatal(c.Problems)
		}
	}
	r.Logs = map[string]string{"n1": clean}
	expect(t, r, "node-processes", Pass)
	r.Final.NodeExits = []string{"n1 at 3.000s: exit status 2"}
	expect(t, r, "node-processes", Fail)
}

func TestEfficacy(t *testing.T) {
	var h hist
	h.write(0, "a", 0, 1, TypeOK, 1)
	h.committed("a")
	r := h.report(t)
	r.Run.NeedsLeaderChange = true
	r.Leaders = []LeaderObs{{Time: 1, Node: "n1", State: "leader", Term: 2}, {Time: 2, Node: "n1", State: "leader", Term: 2}}
	expect(t, r, "efficacy", Inconclusive)
	if res, _ := Check(r); res.Verdict != Inconclusive {
		t.Fatalf("scenario verdict %s, want inconclusive", res.Verdict)
	}
	r.Leaders = append(r.Leaders, LeaderObs{Time: 3, Node: "n2", State: "leader", Term: 3}, LeaderObs{Time: 4, Node: "n1", State: "follower", Term: 3})
	c := expect(t, r, "efficacy", Pass)
	if !strings.Contains(c.Summary, "1 leader changes") {
		t.Fatal(c.Summary)
	}
	r.Nemesis = []NemesisEvent{{Phase: PhaseStart, Error: "nft: boom"}}
	expect(t, r, "efficacy", Inconclusive)
	// A trap that was tried but never seen set leaves the run unproven:
	// the attempts themselves are not errors, the step's verdict is.
	r.Nemesis = []NemesisEvent{
		{Step: 0, Phase: PhaseStart, Fault: NewLeaderReads},
		{Step: 0, Phase: PhaseStep, Fault: NewLeaderReads, Action: ActionTrap, Detail: "attempt 0: not set: no survivor was seen leading"},
		{Step: 0, Phase: PhaseStep, Fault: NewLeaderReads, Action: ActionTrap, Error: "trap never set: no survivor was seen leading"},
		{Step: 0, Phase: PhaseEnd},
	}
	c = expect(t, r, "efficacy", Inconclusive)
	if !strings.Contains(c.Summary, "1 errors") {
		t.Fatal(c.Summary)
	}
	r.Nemesis = append(r.Nemesis[:2], r.Nemesis[3])
	expect(t, r, "efficacy", Pass)
}

func TestLeaderChangesIgnoreStaleClaims(t *testing.T) {
	obs := []LeaderObs{
		{Time: 1, Node: "n1", State: "leader", Term: 2},
		{Time: 2, Node: "n2", State: "leader", Term: 3},
		{Time: 3, Node: "n1", State: "leader", Term: 2}, // a paused old leader answering late
		{Time: 4, Node: "n2", State: "leader", Term: 3},
		{Time: 5, Node: "n3", State: "leader", Term: 5},
	}
	if got := leaderChanges(obs); len(got) != 3 || got[2].Leader != "n3" {
		t.Fatalf("%+v", got)
	}
}

func TestCheckDirRoundTrip(t *testing.T) {
	var h hist
	h.write(0, "a", 0, 1, TypeOK, 1)
	h.read(1, FRead, "a", 1, 2, 3)
	h.committed("a")
	r := h.report(t)
	dir := t.TempDir()
	r.Run.Nodes = nil
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(writeJSON(filepath.Join(dir, FileRun), r.Run))
	must(writeJSON(filepath.Join(dir, FileFinal), r.Final))
	must(writeJSONL(filepath.Join(dir, FileHistory), r.History))
	must(writeJSONL(filepath.Join(dir, FileNemesis), []NemesisEvent{{Time: sec / 2, Step: 0, Phase: PhaseStart, Fault: PartitionLeader, Targets: []string{"n1"}},
		{Time: 2 * sec, Step: 0, Phase: PhaseEnd}}))
	must(writeJSONL(filepath.Join(dir, FileLeaders), []LeaderObs{{Time: 1, Node: "n1", State: "leader", Term: 2}}))
	res, err := CheckDir(dir)
	must(err)
	if res.Verdict != Pass {
		t.Fatalf("%s", res.Summary())
	}
	html, err := os.ReadFile(filepath.Join(dir, FileHTML))
	must(err)
	if !strings.Contains(string(html), "partition-leader") {
		t.Fatal("history.html lacks the nemesis annotation")
	}
	if _, err := os.Stat(filepath.Join(dir, FileResults)); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(res.Summary(), "PASS unit seed=0 ops ok=2 fail=0 info=0") {
		t.Fatal(res.Summary())
	}
}

func TestTally(t *testing.T) {
	got := Tally([]Results{{Verdict: Pass}, {Verdict: Fail}, {Verdict: Inconclusive}})
	if got != "1 passed, 2 failed" {
		t.Fatal(got)
	}
}

func TestPair(t *testing.T) {
	if _, err := Pair([]Op{{Index: 1, Type: TypeOK}}); err == nil {
		t.Fatal("completion without invocation accepted")
	}
	if _, err := Pair([]Op{{Index: 1, Type: TypeInvoke}, {Index: 1, Type: TypeOK}, {Index: 1, Type: TypeFail}}); err == nil {
		t.Fatal("double completion accepted")
	}
	calls, err := Pair([]Op{{Index: 1, Type: TypeInvoke, F: FWrite}})
	if err != nil || calls[0].Status() != TypeInfo || calls[0].End() != 1<<63-1 {
		t.Fatalf("unfinished call: %v %+v", err, calls)
	}
}

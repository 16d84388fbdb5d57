package jepsen

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// Check runs every checker on a report and returns the scenario's results
// and, when the linearizability check ran, the data for history.html.
func Check(r *Report) (Results, *porcupine.LinearizationInfo) {
	a := analyse(r)
	res := Results{Scenario: r.Run.Scenario, Seed: r.Run.Seed, TLS: r.Run.TLS, RecoveryMs: -1}
	for _, c := range a.calls {
		switch c.Status() {
		case TypeOK:
			res.OK++
		case TypeFail:
			res.Fail++
		default:
			res.Info++
		}
	}
	lin, info, ran := checkLinearizable(a, time.Duration(r.Run.CheckTimeoutMs)*time.Millisecond)
	live, recovery := checkLiveness(a, r)
	res.RecoveryMs = recovery
	res.LeaderChanges = len(leaderChanges(r.Leaders)) - 1
	if res.LeaderChanges < 0 {
		res.LeaderChanges = 0
	}
	res.Checks = []CheckResult{
		lin,
		checkLostWrites(a, r),
		checkAbortedReads(a, r),
		checkStaleReads(a, r),
		checkHistoryReads(a),
		checkConvergence(r),
		live,
		checkLogs(r),
		checkProcesses(r),
		checkEfficacy(r),
	}
	res.Verdict = Pass
	for _, c := range res.Checks {
		switch {
		case c.Verdict == Fail:
			res.Verdict = Fail
		case c.Verdict == Inconclusive && res.Verdict == Pass:
			res.Verdict = Inconclusive
		}
	}
	if !ran {
		return res, nil
	}
	return res, &info
}

// checkLostWrites is checker 2: after the heal every node holds the same
// history of every touched register; every acknowledged write is in it
// exactly once (with the id it was acknowledged with), an unknown one at
// most once, nothing else is, versions count up from 1, and every node's
// final linearizable read matches the history.
func checkLostWrites(a *analysis, r *Report) CheckResult {
	res := CheckResult{Name: "no-lost-writes", Verdict: Pass}
	if a.err != "" {
		res.problem("cannot check: %s", a.err)
		return res
	}
	keys := a.touched()
	okWrites, infoWrites := 0, 0
	for _, k := range keys {
		ref, ok := a.final[k]
		if !ok {
			res.problem("%s: no final history from %s", k, a.refNode)
			continue
		}
		for i, d := range ref {
			if d.Version != uint64(i+1) {
				res.problem("%s: entry %d (%s) has version %d", k, i, d.ID, d.Version)
			}
			if w, ok := a.writes[d.Reason]; !ok || w.Invoke.NHS != k.NHS || w.Invoke.Kind != k.Kind {
				res.problem("%s: decision %s (reason %q) was never written by this workload to this register", k, d.ID, d.Reason)
			}
		}
		for _, node := range sortedKeys(r.Final.Nodes) {
			nf := r.Final.Nodes[node]
			if len(nf.Errors) > 0 {
				res.problem("%s could not be read at the end: %s", node, strings.Join(nf.Errors, "; "))
				continue
			}
			h := nf.Histories[k.NHS][k.Kind]
			if !sameIDs(h, ref) {
				res.problem("%s: %s's history (%d entries) differs from %s's (%d)", k, node, len(h), a.refNode, len(ref))
			}
			want := project(ref)[len(ref)]
			if got, ok := consentOf(nf.Consents[k.NHS], k.Kind); !ok {
				res.problem("%s: %s's final read lacks the kind", k, node)
			} else if got.Version != want.Version || got.DecisionID != want.ID || (want.ID != "" && got.State != want.State) {
				res.problem("%s: %s's final read is v%d %s %s, history says v%d %s %s", k, node,
					got.Version, got.DecisionID, got.State, want.Version, want.ID, want.State)
			}
		}
	}
	for token, w := range a.writes {
		n := len(a.byToken[token])
		switch w.Status() {
		case TypeOK:
			okWrites++
			if n != 1 {
				res.problem("acknowledged write %s (%s/%s, ok at %s) appears %d times in the final history", token, w.Invoke.NHS, w.Invoke.Kind, fmtNs(w.Done.Time), n)
			} else if id := a.byToken[token][0].ID; w.Done.DecisionID != "" && id != w.Done.DecisionID {
				res.problem("acknowledged write %s was acknowledged as %s but the history holds %s", token, w.Done.DecisionID, id)
			}
		case TypeInfo:
			infoWrites++
			if n > 1 {
				res.problem("unknown-outcome write %s appears %d times in the final history", token, n)
			}
		}
	}
	res.Summary = fmt.Sprintf("%d registers on %d nodes; %d acknowledged writes, %d unknown-outcome writes; reference %s",
		len(keys), len(r.Final.Nodes), okWrites, infoWrites, a.refNode)
	return res
}

func sameIDs(a, b []DecisionVal) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ID != b[i].ID {
			return false
		}
	}
	return true
}

func consentOf(cs []ConsentVal, kind string) (ConsentVal, bool) {
	for _, c := range cs {
		if c.Kind == kind {
			return c, true
		}
	}
	return ConsentVal{}, false
}

// checkAbortedReads is checker 3: no read, whatever its kind, and no final
// history returns a write that was reported as a definite failure.
func checkAbortedReads(a *analysis, r *Report) CheckResult {
	res := CheckResult{Name: "no-aborted-reads", Verdict: Pass}
	failed := map[string]Call{}
	for t, w := range a.writes {
		if w.Status() == TypeFail {
			failed[t] = w
		}
	}
	seen := func(where, id string) {
		t := a.tokenOf(id)
		if w, ok := failed[t]; ok {
			res.problem("%s returned %s, written by %s which failed with %q", where, id, t, w.Done.Error)
		}
	}
	reads := 0
	for _, c := range a.calls {
		if c.Status() != TypeOK {
			continue
		}
		switch c.Invoke.F {
		case FRead, FStale:
			reads++
			for _, cv := range c.Done.Consents {
				seen(fmt.Sprintf("%s #%d by %s on %s", c.Invoke.F, c.Invoke.Index, c.Invoke.Client, c.Invoke.Node), cv.DecisionID)
			}
		case FHist:
			reads++
			for _, id := range c.Done.Decisions {
				seen(fmt.Sprintf("hist #%d by %s on %s", c.Invoke.Index, c.Invoke.Client, c.Invoke.Node), id)
			}
		case FWrite, FCAS:
			if c.Done.Consent != nil {
				seen(fmt.Sprintf("the response to write #%d", c.Invoke.Index), c.Done.Consent.DecisionID)
			}
		}
	}
	for _, node := range sortedKeys(r.Final.Nodes) {
		for nhs, kinds := range r.Final.Nodes[node].Histories {
			for kind, h := range kinds {
				for _, d := range h {
					if w, ok := failed[d.Reason]; ok {
						res.problem("final history of %s/%s on %s holds %s, written by %s which failed with %q", nhs, kind, node, d.ID, d.Reason, w.Done.Error)
					}
				}
			}
		}
	}
	res.Summary = fmt.Sprintf("%d failed writes, %d successful reads examined", len(failed), reads)
	return res
}

// checkStaleReads is checker 4: a stale read returns a state the register
// really had (a committed prefix of the final history) and, per client and
// node process, its version never goes down (a process that replaced a
// removed member starts from nothing).
func checkStaleReads(a *analysis, r *Report) CheckResult {
	res := CheckResult{Name: "stale-reads", Verdict: Pass}
	if a.err != "" {
		res.problem("cannot check: %s", a.err)
		return res
	}
	projections := map[key][]projected{}
	procs := incarnationsOf(r.Nemesis)
	last := map[string]uint64{}
	n := 0
	for _, c := range a.calls {
		if c.Invoke.F != FStale || c.Status() != TypeOK {
			continue
		}
		n++
		for _, cv := range c.Done.Consents {
			k := key{c.Invoke.NHS, cv.Kind}
			p, ok := projections[k]
			if !ok {
				p = project(a.final[k])
				projections[k] = p
			}
			where := fmt.Sprintf("stale read #%d by %s on %s at %s", c.Invoke.Index, c.Invoke.Client, c.Invoke.Node, fmtNs(c.Invoke.Time))
			if cv.Version >= uint64(len(p)) {
				res.problem("%s: %s at v%d, but only %d decisions were ever committed", where, k, cv.Version, len(p)-1)
			} else if want := p[cv.Version]; cv.DecisionID != want.ID || (want.ID != "" && cv.State != want.State) {
				res.problem("%s: %s at v%d is %s %s; at v%d the register was %s %s", where, k, cv.Version, cv.DecisionID, cv.State, cv.Version, want.ID, want.State)
			}
			mk := c.Invoke.Client + "@" + procs.at(c.Invoke.Node, c.Invoke.Time) + "/" + k.String()
			if prev, ok := last[mk]; ok && cv.Version < prev {
				res.problem("%s: %s went back from v%d to v%d", where, k, prev, cv.Version)
			}
			last[mk] = cv.Version
		}
	}
	res.Summary = fmt.Sprintf("%d stale reads", n)
	return res
}

// checkHistoryReads is checker 5: every history read is a prefix of the
// final history, holds every write acknowledged before it began and none
// invoked after it ended, holds each write at most once, and the final
// history orders writes consistently with real time.
func checkHistoryReads(a *analysis) CheckResult {
	res := CheckResult{Name: "history-reads", Verdict: Pass}
	if a.err != "" {
		res.problem("cannot check: %s", a.err)
		return res
	}
	okByKey := map[key][]Call{}
	for _, w := range a.writes {
		if w.Status() == TypeOK {
			k := key{w.Invoke.NHS, w.Invoke.Kind}
			okByKey[k] = append(okByKey[k], w)
		}
	}
	n := 0
	for _, c := range a.calls {
		if c.Invoke.F != FHist || c.Status() != TypeOK {
			continue
		}
		n++
		k := key{c.Invoke.NHS, c.Invoke.Kind}
		ref := a.final[k]
		ids := c.Done.Decisions
		where := fmt.Sprintf("hist #%d by %s on %s [%s, %s]", c.Invoke.Index, c.Invoke.Client, c.Invoke.Node, fmtNs(c.Invoke.Time), fmtNs(c.Done.Time))
		if len(ids) > len(ref) {
			res.problem("%s: %s has %d entries, the final history only %d", where, k, len(ids), len(ref))
		}
		for i, id := range ids {
			if i < len(ref) && ref[i].ID != id {
				res.problem("%s: %s entry %d is %s, the final history has %s: not a prefix", where, k, i, id, ref[i].ID)
				break
			}
		}
		in := map[string]int{}
		for _, id := range ids {
			in[id]++
			if in[id] == 2 {
				res.problem("%s: %s lists %s twice", where, k, id)
			}
			if w, ok := a.writes[a.tokenOf(id)]; ok && w.Invoke.Time > c.Done.Time {
				res.problem("%s: %s holds %s, invoked at %s after the read returned", where, k, id, fmtNs(w.Invoke.Time))
			}
		}
		for _, w := range okByKey[k] {
			if w.Done.Time < c.Invoke.Time && in[w.Done.DecisionID] == 0 {
				res.problem("%s: %s lacks %s (%s), acknowledged at %s before the read began", where, k, w.Done.DecisionID, w.Invoke.Token, fmtNs(w.Done.Time))
			}
		}
	}
	// Real-time order: if A returned before B was invoked, A precedes B.
	for _, k := range a.touched() {
		var maxInvoke int64 = -1
		var maxTok string
		for _, d := range a.final[k] {
			w, ok := a.writes[d.Reason]
			if !ok {
				continue
			}
			if w.End() < maxInvoke {
				res.problem("%s: %s (returned %s) comes after %s (invoked %s) in the final history", k, d.Reason, fmtNs(w.End()), maxTok, fmtNs(maxInvoke))
			}
			if w.Invoke.Time > maxInvoke {
				maxInvoke, maxTok = w.Invoke.Time, d.Reason
			}
		}
	}
	res.Summary = fmt.Sprintf("%d history reads", n)
	return res
}

// checkConvergence is checker 6: every node reports the same applied index
// and state digest; the final reads cover exactly the expected members,
// and each of them has exactly those as voters.
func checkConvergence(r *Report) CheckResult {
	res := CheckResult{Name: "convergence", Verdict: Pass}
	if len(r.Final.Nodes) == 0 {
		res.problem("no final status from any node")
		return res
	}
	members := append([]string(nil), r.members()...)
	sort.Strings(members)
	if got := sortedKeys(r.Final.Nodes); len(r.Final.Members) > 0 && strings.Join(got, ",") != strings.Join(members, ",") {
		res.problem("final reads are from %v, the members are %v", got, members)
	}
	for _, node := range sortedKeys(r.Final.Nodes) {
		st := r.Final.Nodes[node].Status
		if st.MemberIDs != nil && strings.Join(st.MemberIDs, ",") != strings.Join(members, ",") {
			res.problem("%s's configuration has voters %v, expected %v", node, st.MemberIDs, members)
		}
	}
	var applied uint64
	var digest, first string
	for _, node := range sortedKeys(r.Final.Nodes) {
		st := r.Final.Nodes[node].Status
		if st.StateDigest == "" {
			res.problem("%s reported no state digest", node)
			continue
		}
		if first == "" {
			applied, digest, first = st.AppliedIndex, st.StateDigest, node
			continue
		}
		if st.AppliedIndex != applied || st.StateDigest != digest {
			res.problem("%s is at %d/%s, %s at %d/%s", node, st.AppliedIndex, shortDigest(st.StateDigest), first, applied, shortDigest(digest))
		}
	}
	if r.Final.ConvergedAfterMs < 0 {
		res.problem("nodes never agreed on applied index and digest after the heal")
	}
	res.Summary = fmt.Sprintf("applied index %d, digest %s, converged %dms after the workload stopped", applied, shortDigest(digest), r.Final.ConvergedAfterMs)
	return res
}

func shortDigest(d string) string {
	if len(d) > 12 {
		return d[:12]
	}
	return d
}

// checkLiveness is checker 7: ok operations per phase (reported), and a
// write acknowledged within the recovery bound after the final heal.
func checkLiveness(a *analysis, r *Report) (CheckResult, int64) {
	res := CheckResult{Name: "liveness", Verdict: Pass}
	type bound struct {
		t    int64
		name string
	}
	bounds := []bound{{0, "warm-up"}}
	for _, e := range r.Nemesis {
		switch e.Phase {
		case PhaseStart:
			bounds = append(bounds, bound{e.Time, fmt.Sprintf("%d:%s", e.Step, e.Fault)})
		case PhaseEnd:
			bounds = append(bounds, bound{e.Time, fmt.Sprintf("%d:healed", e.Step)})
		case PhaseHeal:
			bounds = append(bounds, bound{e.Time, "after-final-heal"})
		}
	}
	sort.SliceStable(bounds, func(i, j int) bool { return bounds[i].t < bounds[j].t })
	counts := make([]int, len(bounds))
	for _, c := range a.calls {
		if c.Status() != TypeOK {
			continue
		}
		i := sort.Search(len(bounds), func(i int) bool { return bounds[i].t > c.Done.Time }) - 1
		if i >= 0 {
			counts[i]++
		}
	}
	var parts []string
	var idle []string
	for i, b := range bounds {
		parts = append(parts, fmt.Sprintf("%s=%d", b.name, counts[i]))
		if counts[i] == 0 {
			idle = append(idle, b.name)
		}
	}
	recovery := int64(-1)
	heal := r.Final.HealTime
	for _, c := range a.calls {
		if (c.Invoke.F == FWrite || c.Invoke.F == FCAS) && c.Status() == TypeOK && c.Invoke.Time >= heal {
			if d := (c.Done.Time - heal) / int64(time.Millisecond); recovery < 0 || d < recovery {
				recovery = d
			}
		}
	}
	boundMs := r.Run.RecoveryBoundMs
	switch {
	case recovery < 0:
		res.problem("no write was acknowledged after the final heal")
	case boundMs > 0 && recovery > boundMs:
		res.problem("first write acknowledged %dms after the final heal, over the %dms bound", recovery, boundMs)
	}
	res.Summary = fmt.Sprintf("ok ops per phase: %s; first write acknowledged %dms after the final heal (bound %dms); followers caught up %dms after the workload stopped",
		strings.Join(parts, " "), recovery, boundMs, r.Final.ConvergedAfterMs)
	if len(idle) > 0 {
		res.Summary += "; phases with no ok operation: " + strings.Join(idle, " ")
	}
	return res, recovery
}

var badLogLine = regexp.MustCompile(`\bpanic\b|fatal error|DATA RACE`)

// checkLogs is checker 8: no panic, fatal error or data race in node logs.
func checkLogs(r *Report) CheckResult {
	res := CheckResult{Name: "node-logs", Verdict: Pass}
	lines := 0
	for _, node := range sortedKeys(r.Logs) {
		f, err := os.Open(r.Logs[node])
		if err != nil {
			res.problem("%s: %v", node, err)
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
		for n := 1; sc.Scan(); n++ {
			lines++
			if badLogLine.Match(sc.Bytes()) {
				res.problem("%s.log:%d: %s", node, n, sc.Text())
			}
		}
		if err := sc.Err(); err != nil {
			res.problem("%s: %v", node, err)
		}
		f.Close()
	}
	res.Summary = fmt.Sprintf("%d log lines from %d nodes", lines, len(r.Logs))
	return res
}

// checkProcesses: no node exited unasked, and every node stopped promptly
// on SIGTERM at the end (a hang there leaves a goroutine dump in its log).
func checkProcesses(r *Report) CheckResult {
	res := CheckResult{Name: "node-processes", Verdict: Pass, Summary: "no unexpected exit; every node stopped on SIGTERM"}
	for _, e := range r.Final.NodeExits {
		res.problem("%s", e)
	}
	if len(res.Problems) > 0 {
		res.Summary = fmt.Sprintf("%d process problems", len(res.Problems)+res.Omitted)
	}
	return res
}

// leaderChange is the first observation of a node claiming leadership in a
// term.
type leaderChange struct {
	Time   int64
	Leader string
	Term   uint64
}

// leaderChanges lists successive leaderships (node, term) in the order
// they were first seen; its length minus one is the number of changes.
func leaderChanges(obs []LeaderObs) []leaderChange {
	sorted := append([]LeaderObs(nil), obs...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Time < sorted[j].Time })
	var out []leaderChange
	var lastTerm uint64
	seen := map[string]bool{}
	for _, o := range sorted {
		if o.State != "leader" {
			continue
		}
		id := fmt.Sprintf("%s@%d", o.Node, o.Term)
		if seen[id] || o.Term < lastTerm {
			continue
		}
		seen[id] = true
		lastTerm = o.Term
		out = append(out, leaderChange{Time: o.Time, Leader: o.Node, Term: o.Term})
	}
	return out
}

var snapshotTaken = regexp.MustCompile(`snapshot complete up to`)
var snapshotInstalled = regexp.MustCompile(`Installed remote snapshot`)

// checkEfficacy is checker 9: the faults did something. A scenario that
// needs a leader change and saw none is inconclusive, as is one whose
// nemesis actions failed.
func checkEfficacy(r *Report) CheckResult {
	res := CheckResult{Name: "efficacy", Verdict: Pass}
	changes := len(leaderChanges(r.Leaders)) - 1
	if changes < 0 {
		changes = 0
	}
	actions, failures := 0, 0
	for _, e := range r.Nemesis {
		if e.Phase == PhaseStart {
			actions++
		}
		if e.Error != "" {
			failures++
		}
	}
	taken, installed := 0, 0
	for _, node := range sortedKeys(r.Logs) {
		b, err := os.ReadFile(r.Logs[node])
		if err != nil {
			continue
		}
		taken += len(snapshotTaken.FindAll(b, -1))
		installed += len(snapshotInstalled.FindAll(b, -1))
	}
	res.Summary = fmt.Sprintf("%d nemesis actions (%d errors), %d leader changes, %d snapshots taken, %d snapshots installed",
		actions, failures, changes, taken, installed)
	planned, rejoined := 0, 0
	for _, st := range r.Run.Schedule {
		if st.Fault == Membership {
			planned++
		}
	}
	for _, e := range r.Nemesis {
		if e.Action == ActionVoter && e.Error == "" {
			rejoined++
		}
	}
	if planned > 0 {
		res.Summary += fmt.Sprintf(", %d of %d planned membership changes completed (%v retired)", rejoined, planned, r.Final.Retired)
		if rejoined == 0 {
			res.Verdict = Inconclusive
			res.Problems = append(res.Problems, "no membership change completed")
		}
	}
	if r.Run.SnapshotStress && installed == 0 {
		// Reported, not failed: consentd exposes no snapshot interval flag,
		// so whether raft snapshots within a run is up to its 30–60s timer.
		res.Summary += "; snapshot profile installed no snapshot, so InstallSnapshot went untested"
	}
	if failures > 0 {
		res.Verdict = Inconclusive
		res.Problems = append(res.Problems, fmt.Sprintf("%d nemesis actions failed; see %s", failures, FileNemesis))
	}
	if r.Run.NeedsLeaderChange && changes == 0 {
		res.Verdict = Inconclusive
		res.Problems = append(res.Problems, "no leader change: the faults did not exercise failover")
	}
	return res
}

// CheckDir re-runs every checker on a saved report and rewrites its
// results.json and history.html.
func CheckDir(dir string) (Results, error) {
	rep, err := LoadReport(dir)
	if err != nil {
		return Results{}, err
	}
	res, info := Check(rep)
	if err := writeJSON(filepath.Join(dir, FileResults), res); err != nil {
		return res, err
	}
	if info != nil {
		f, err := os.Create(filepath.Join(dir, FileHTML))
		if err != nil {
			return res, err
		}
		defer f.Close()
		if err := visualize(f, *info, rep); err != nil {
			return res, fmt.Errorf("%s: %w", FileHTML, err)
		}
	}
	return res, nil
}

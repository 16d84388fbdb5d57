package jepsen

import (
	"fmt"
	"sort"
)

// key names one register: a (patient, kind) pair.
type key struct{ NHS, Kind string }

func (k key) String() string { return k.NHS + "/" + k.Kind }

// projected is the current state of a register after some prefix of its
// history: the decision that counts, and the version (prefix length).
type projected struct {
	Version uint64
	ID      string // "" while nothing is recorded
	State   string // "" while nothing is recorded (the kind's default)
	Eff     int64
}

// project replays a history with the register's rule: a decision becomes
// current when nothing is current or its effective_from is not older than
// the current one's (ties go to the later raft index). out[v] is the state
// after v decisions.
func project(h []DecisionVal) []projected {
	out := make([]projected, 0, len(h)+1)
	cur := projected{}
	out = append(out, cur)
	for _, d := range h {
		cur.Version++
		if cur.ID == "" || d.EffectiveFrom >= cur.Eff {
			cur.ID, cur.State, cur.Eff = d.ID, d.State, d.EffectiveFrom
		}
		out = append(out, cur)
	}
	return out
}

// analysis is what several checkers share, derived once from a report.
type analysis struct {
	calls []Call
	// refNode is the node whose final answers are the reference.
	refNode string
	// final is the reference final history of every register read at the end.
	final map[key][]DecisionVal
	// byID and byToken index the reference final history.
	byID    map[string]DecisionVal
	byToken map[string][]DecisionVal
	// okIDs maps decision ids acknowledged to writers to their token, so a
	// read of an acknowledged write maps to it even if the final read lost it.
	okIDs map[string]string
	// writes by token.
	writes map[string]Call
	err    string
}

func analyse(r *Report) *analysis {
	a := &analysis{final: map[key][]DecisionVal{}, byID: map[string]DecisionVal{}, byToken: map[string][]DecisionVal{},
		okIDs: map[string]string{}, writes: map[string]Call{}}
	calls, err := Pair(r.History)
	if err != nil {
		a.err = err.Error()
		return a
	}
	a.calls = calls
	for _, c := range calls {
		if c.Invoke.F != FWrite && c.Invoke.F != FCAS {
			continue
		}
		a.writes[c.Invoke.Token] = c
		if c.Status() == TypeOK && c.Done.DecisionID != "" {
			a.okIDs[c.Done.DecisionID] = c.Invoke.Token
		}
	}
	a.refNode = referenceNode(r.Final)
	if a.refNode == "" {
		a.err = "no node answered every final read"
		if r.Final.SetupError != "" {
			a.err += ": " + r.Final.SetupError
		}
		return a
	}
	nf := r.Final.Nodes[a.refNode]
	for nhs, kinds := range nf.Histories {
		for kind, h := range kinds {
			a.final[key{nhs, kind}] = h
			for _, d := range h {
				a.byID[d.ID] = d
				a.byToken[d.Reason] = append(a.byToken[d.Reason], d)
			}
		}
	}
	return a
}

// referenceNode prefers the final leader among nodes that answered every
// final read, then the lowest id.
func referenceNode(f Final) string {
	var candidates []string
	for _, id := range sortedKeys(f.Nodes) {
		if n := f.Nodes[id]; len(n.Errors) == 0 && n.Histories != nil {
			candidates = append(candidates, id)
		}
	}
	for _, id := range candidates {
		if f.Nodes[id].Status.State == "leader" {
			return id
		}
	}
	if len(candidates) > 0 {
		return candidates[0]
	}
	return ""
}

// tokenOf maps a decision id a read returned to the token of the write
// that made it; "" for no decision, "?id" for an id nobody wrote.
func (a *analysis) tokenOf(id string) string {
	if id == "" {
		return ""
	}
	if d, ok := a.byID[id]; ok {
		return d.Reason
	}
	if t, ok := a.okIDs[id]; ok {
		return t
	}
	return "?" + id
}

// touched lists every register the workload wrote or read, sorted.
func (a *analysis) touched() []key {
	seen := map[key]bool{}
	for _, c := range a.calls {
		switch c.Invoke.F {
		case FWrite, FCAS, FHist:
			seen[key{c.Invoke.NHS, c.Invoke.Kind}] = true
		}
	}
	out := make([]key, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

func fmtNs(ns int64) string {
	if ns == 1<<63-1 {
		return "∞"
	}
	return fmt.Sprintf("%.3fs", float64(ns)/1e9)
}

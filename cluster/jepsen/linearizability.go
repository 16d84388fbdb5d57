package jepsen

import (
	"fmt"
	"io"
	"math"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"
)

// regState is the model of one (patient, kind) register: its version and
// the decision that counts. Comparable, so porcupine's == works.
type regState struct {
	Version uint64
	Token   string // "" while nothing is recorded
	State   string // "" means the kind's default
	Eff     int64
}

type linInput struct {
	Key         string
	Read        bool
	Token       string
	State       string
	Eff         int64
	HasExpected bool
	Expected    uint64
}

// Write outcomes the model accepts.
const (
	outWriteOK = iota
	outMismatch
	outUnknown // an info write that the final history shows was applied
	outRead
)

type linOutput struct {
	Outcome    int
	Version    uint64 // decision.version (writes)
	Changed    bool
	CurVersion uint64
	CurToken   string
	CurState   string
}

func stepRegister(st regState, in linInput, out linOutput) (bool, regState) {
	if in.Read {
		return out.CurVersion == st.Version && out.CurToken == st.Token && out.CurState == st.State, st
	}
	if out.Outcome == outMismatch {
		return in.HasExpected && in.Expected != st.Version, st
	}
	if in.HasExpected && in.Expected != st.Version {
		return false, st
	}
	next := st
	next.Version++
	changed := st.Token == "" || in.Eff >= st.Eff
	if changed {
		next.Token, next.State, next.Eff = in.Token, in.State, in.Eff
	}
	if out.Outcome == outUnknown {
		return true, next
	}
	ok := out.Version == next.Version && out.Changed == changed &&
		out.CurVersion == next.Version && out.CurToken == next.Token && out.CurState == next.State
	return ok, next
}

// registerModel is the sequential specification Porcupine checks against,
// partitioned per register.
func registerModel() porcupine.Model {
	return porcupine.Model{
		Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
			byKey := map[string][]porcupine.Operation{}
			var keys []string
			for _, op := range h {
				k := op.Input.(linInput).Key
				if _, ok := byKey[k]; !ok {
					keys = append(keys, k)
				}
				byKey[k] = append(byKey[k], op)
			}
			sort.Strings(keys)
			out := make([][]porcupine.Operation, 0, len(keys))
			for _, k := range keys {
				out = append(out, byKey[k])
			}
			return out
		},
		Init: func() any { return regState{} },
		Step: func(state, input, output any) (bool, any) {
			return stepRegister(state.(regState), input.(linInput), output.(linOutput))
		},
		DescribeOperation: func(input, output any) string {
			in, out := input.(linInput), output.(linOutput)
			if in.Read {
				return fmt.Sprintf("read → v%d %s %s", out.CurVersion, short(out.CurToken), orDefault(out.CurState))
			}
			cas := ""
			if in.HasExpected {
				cas = fmt.Sprintf(" if v%d", in.Expected)
			}
			switch out.Outcome {
			case outMismatch:
				return fmt.Sprintf("write %s%s → version mismatch", short(in.Token), cas)
			case outUnknown:
				return fmt.Sprintf("write %s %s%s → unknown (applied)", short(in.Token), in.State, cas)
			}
			return fmt.Sprintf("write %s %s%s → v%d changed=%v", short(in.Token), in.State, cas, out.Version, out.Changed)
		},
		DescribeState: func(state any) string {
			s := state.(regState)
			return fmt.Sprintf("v%d %s %s", s.Version, short(s.Token), orDefault(s.State))
		},
	}
}

func short(token string) string {
	if token == "" {
		return "-"
	}
	return token
}

func orDefault(state string) string {
	if state == "" {
		return "(default)"
	}
	return state
}

// linOps turns the history into Porcupine operations: ok writes, version
// mismatches, info writes the final history shows were applied (with an
// infinite return time; absent ones never happened), and ok linearizable
// reads split per kind. Failed reads and definite failures are dropped.
func linOps(a *analysis) (ops []porcupine.Operation, resolvedApplied, resolvedAbsent int) {
	for _, c := range a.calls {
		in := c.Invoke
		switch in.F {
		case FWrite, FCAS:
			li := linInput{Key: key{in.NHS, in.Kind}.String(), Token: in.Token, State: in.State, Eff: in.EffectiveFrom}
			if in.Expected != nil {
				li.HasExpected, li.Expected = true, *in.Expected
			}
			var lo linOutput
			ret := c.End()
			switch c.Status() {
			case TypeOK:
				d := c.Done
				if d.Duplicate {
					lo.Outcome, ret = outUnknown, math.MaxInt64
					break
				}
				lo = linOutput{Outcome: outWriteOK, Version: d.Version, Changed: d.Changed}
				if d.Consent != nil {
					lo.CurVersion, lo.CurToken, lo.CurState = d.Consent.Version, a.tokenOf(d.Consent.DecisionID), d.Consent.State
					if lo.CurToken == "" {
						lo.CurState = ""
					}
				}
			case TypeFail:
				if !c.Done.Mismatch {
					continue
				}
				lo.Outcome = outMismatch
			default:
				if len(a.byToken[in.Token]) == 0 {
					resolvedAbsent++
					continue
				}
				resolvedApplied++
				lo.Outcome = outUnknown
			}
			ops = append(ops, porcupine.Operation{ClientId: in.Process, Input: li, Call: in.Time, Output: lo, Return: ret})
		case FRead:
			if c.Status() != TypeOK {
				continue
			}
			for _, cv := range c.Done.Consents {
				lo := linOutput{Outcome: outRead, CurVersion: cv.Version, CurToken: a.tokenOf(cv.DecisionID), CurState: cv.State}
				if lo.CurToken == "" {
					lo.CurState = ""
				}
				ops = append(ops, porcupine.Operation{ClientId: in.Process, Input: linInput{Key: key{in.NHS, cv.Kind}.String(), Read: true},
					Call: in.Time, Output: lo, Return: c.Done.Time})
			}
		}
	}
	return ops, resolvedApplied, resolvedAbsent
}

// checkLinearizable is checker 1. It returns the linearization info so the
// caller can render history.html.
func checkLinearizable(a *analysis, timeout time.Duration) (CheckResult, porcupine.LinearizationInfo, bool) {
	res := CheckResult{Name: "linearizable", Verdict: Pass}
	if a.err != "" {
		res.problem("cannot check: %s", a.err)
		return res, porcupine.LinearizationInfo{}, false
	}
	ops, applied, absent := linOps(a)
	model := registerModel()
	start := time.Now()
	// The verdict first: without the linearization info Porcupine stops at
	// the first illegal register, while the info (the longest linearizable
	// prefix of every register, for history.html) can take minutes on a
	// register with a thousand stale reads, or run out and turn a clear
	// violation into "unknown".
	verdict := porcupine.CheckOperationsTimeout(model, ops, timeout)
	took := time.Since(start)
	_, info := porcupine.CheckOperationsVerbose(model, ops, illustrateTimeout(verdict, timeout))
	res.Summary = fmt.Sprintf("%d operations on %d registers, %d indeterminate writes applied, %d never happened; porcupine %s in %v",
		len(ops), len(model.Partition(ops)), applied, absent, verdict, took.Round(time.Millisecond))
	switch verdict {
	case porcupine.Ok:
	case porcupine.Illegal:
		res.problem("history is not linearizable; open %s to see the longest linearizable prefix of each register", FileHTML)
	default:
		res.problem("porcupine gave %s within %v: treated as a failure", verdict, timeout)
	}
	return res, info, true
}

// illustrateTimeout bounds the search for history.html's linearization
// info once the verdict is known: an illegal history gets a short search
// (the HTML then shows what was found in it), any other the same bound.
func illustrateTimeout(verdict porcupine.CheckResult, timeout time.Duration) time.Duration {
	if verdict == porcupine.Illegal {
		return min(timeout, 20*time.Second)
	}
	return timeout
}

// visualize writes Porcupine's HTML with nemesis windows and leader changes
// as annotations.
func visualize(w io.Writer, info porcupine.LinearizationInfo, r *Report) error {
	var anns []porcupine.Annotation
	open := map[int]NemesisEvent{}
	for _, e := range r.Nemesis {
		switch e.Phase {
		case PhaseStart:
			open[e.Step] = e
		case PhaseEnd:
			s, ok := open[e.Step]
			if !ok {
				continue
			}
			delete(open, e.Step)
			anns = append(anns, porcupine.Annotation{Tag: "nemesis", Start: s.Time, End: e.Time,
				Description: fmt.Sprintf("%s %v", s.Fault, s.Targets), Details: fmt.Sprintf("leader %s; %s", s.Leader, s.Detail),
				BackgroundColor: "#f6c6c6"})
		case PhaseHeal:
			anns = append(anns, porcupine.Annotation{Tag: "nemesis", Start: e.Time, Description: "final heal", Details: e.Detail,
				BackgroundColor: "#c6f6c6"})
		}
	}
	for _, ch := range leaderChanges(r.Leaders) {
		anns = append(anns, porcupine.Annotation{Tag: "leader", Start: ch.Time,
			Description: fmt.Sprintf("%s term %d", ch.Leader, ch.Term), BackgroundColor: "#c6d8f6"})
	}
	info.AddAnnotations(anns)
	return porcupine.Visualize(registerModel(), info, w)
}

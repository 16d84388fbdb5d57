package jepsen

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	consentv1 "github.com/lmc-consent/consentd/proto/consent/v1"
)

// patientNumber returns the NHS number of the n-th patient of a run: in the
// 999 test range, with a valid Modulus 11 check digit.
func patientNumber(seed int64, n int) string {
	body := (uint64(seed)*7919 + uint64(n)*104729) % 1_000_000
	for {
		digits := fmt.Sprintf("999%06d", body)
		sum := 0
		for i := 0; i < 9; i++ {
			sum += int(digits[i]-'0') * (10 - i)
		}
		check := 11 - sum%11
		if check == 11 {
			check = 0
		}
		if check != 10 && digits != "999999999" {
			return fmt.Sprintf("%s%d", digits, check)
		}
		body = (body + 1) % 1_000_000
	}
}

// kindStates lists each consent kind and its states, as the registry
// (GET /v1/kinds) reported them.
type kindStates struct {
	names  []string
	states map[string][]string
}

func kindsFrom(resp *consentv1.ListKindsResponse) kindStates {
	ks := kindStates{states: map[string][]string{}}
	for _, k := range resp.GetKinds() {
		ks.names = append(ks.names, k.GetName())
		for _, s := range k.GetStates() {
			ks.states[k.GetName()] = append(ks.states[k.GetName()], s.GetName())
		}
	}
	return ks
}

// opWeights is the workload's mix.
var opWeights = []struct {
	f      string
	weight int
}{{FWrite, 30}, {FCAS, 12}, {FRead, 28}, {FStale, 15}, {FHist, 15}}

// workload runs the clients. Every client performs one operation at a
// time; a write with an unknown outcome retires the client's process id.
type workload struct {
	seed        int64
	rec         *Recorder
	kinds       kindStates
	rotateEvery int
	// perEpoch patients are active at once, so that at most about eight
	// clients share one patient whatever the cluster size.
	perEpoch  int
	opTimeout time.Duration
	// start is the run's start; effective_from is an hour before it plus
	// the elapsed time, and one write in eight goes back up to ten minutes
	// so the projection rule (latest effective_from wins) is exercised.
	start time.Time
	tag   string

	ops         atomic.Int64
	nextProcess atomic.Int64
	// readBurst makes every client's next operation a linearizable read
	// (after kill-all: "restart all, read at once").
	readBurst atomic.Int64
	// holdWrites turns every client's writes into linearizable reads while
	// a trap needs the leader's log quiet; writing counts writes in flight.
	holdWrites atomic.Bool
	writing    atomic.Int64
}

// quietWrites holds the clients' writes and waits, up to timeout, until
// none is in flight; release lets them write again.
func (w *workload) quietWrites(ctx context.Context, timeout time.Duration) (release func(), err error) {
	w.holdWrites.Store(true)
	release = func() { w.holdWrites.Store(false) }
	deadline := time.Now().Add(timeout)
	for w.writing.Load() > 0 {
		if ctx.Err() != nil || time.Now().After(deadline) {
			return release, fmt.Errorf("%d writes still in flight after %v", w.writing.Load(), timeout)
		}
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Millisecond):
		}
	}
	return release, nil
}

type wclient struct {
	w      *workload
	name   string
	proto  string
	pinned string // "" for a failover client
	nodes  []string
	apis   map[string]nodeAPI
	node   string
	rng    *rand.Rand
	proc   int
	slot   int // creation order; picks among the active patients
	burst  int64
	seenV  map[key]uint64
	tokens int
}

// patient picks the patient of a client's next operation: the workload
// moves to fresh patients every rotateEvery operations.
func (w *workload) patient(slot int) string {
	epoch := int((w.ops.Add(1) - 1) / int64(w.rotateEvery))
	per := max(w.perEpoch, 1)
	return patientNumber(w.seed, epoch*per+slot%per)
}

func (c *wclient) run(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	for ctx.Err() == nil {
		failed := c.step(ctx)
		// A short pause keeps three nodes and the runner within two cores;
		// a longer one after a failure stops a client spinning on a dead node.
		pause := time.Duration(5+c.rng.IntN(25)) * time.Millisecond
		if failed {
			pause += time.Duration(50+c.rng.IntN(100)) * time.Millisecond
		}
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
	}
}

func (c *wclient) pickF() string {
	if b := c.w.readBurst.Load(); b != c.burst {
		c.burst = b
		return FRead
	}
	total := 0
	for _, o := range opWeights {
		total += o.weight
	}
	n := c.rng.IntN(total)
	for _, o := range opWeights {
		if n < o.weight {
			return o.f
		}
		n -= o.weight
	}
	return FRead
}

// step performs one operation and reports whether it failed.
func (c *wclient) step(parent context.Context) bool {
	nhs := c.w.patient(c.slot)
	f := c.pickF()
	if f == FWrite || f == FCAS {
		// Counted before the hold is checked, so quietWrites never misses
		// a write that saw no hold.
		c.w.writing.Add(1)
		if c.w.holdWrites.Load() {
			c.w.writing.Add(-1)
			f = FRead
		} else {
			defer c.w.writing.Add(-1)
		}
	}
	kind := c.w.kinds.names[c.rng.IntN(len(c.w.kinds.names))]
	api := c.apis[c.node]
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), c.w.opTimeout)
	defer cancel()
	base := Op{Process: c.proc, Client: c.name, Node: c.node, Proto: c.proto, F: f, NHS: nhs}
	var failed bool
	switch f {
	case FWrite, FCAS:
		failed = c.write(ctx, api, base, kind)
	case FRead, FStale:
		consistency := ""
		if f == FStale {
			consistency = "stale"
		}
		inv := c.w.rec.Invoke(base)
		resp, err := api.Consents(ctx, nhs, consistency)
		if err != nil {
			c.w.rec.Complete(inv, TypeFail, Op{Error: err.Error()})
			failed = true
			break
		}
		res := Op{Revision: resp.GetRevision()}
		for _, cs := range resp.GetConsents() {
			res.Consents = append(res.Consents, ConsentVal{Kind: cs.GetKind(), State: cs.GetState(), Version: cs.GetVersion(), DecisionID: cs.GetDecisionId()})
			if f == FRead {
				c.seenV[key{nhs, cs.GetKind()}] = cs.GetVersion()
			}
		}
		c.w.rec.Complete(inv, TypeOK, res)
	case FHist:
		base.Kind = kind
		inv := c.w.rec.Invoke(base)
		ds, pages, err := allDecisions(ctx, api, nhs, kind)
		if err != nil {
			c.w.rec.Complete(inv, TypeFail, Op{Error: err.Error()})
			failed = true
			break
		}
		if pages > 1 {
			// Several pages are several reads: not one point in time.
			c.w.rec.Complete(inv, TypeFail, Op{Error: fmt.Sprintf("history spans %d pages; not checked", pages)})
			break
		}
		res := Op{}
		for _, d := range ds {
			res.Decisions = append(res.Decisions, d.GetId())
		}
		c.w.rec.Complete(inv, TypeOK, res)
	}
	if failed && c.pinned == "" {
		c.node = c.nodes[(indexOf(c.nodes, c.node)+1)%len(c.nodes)]
	}
	return failed
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// write records one decision with a unique token (sent as the reason) and
// request id; a compare-and-set sends the version this client last saw.
func (c *wclient) write(ctx context.Context, api nodeAPI, base Op, kind string) (failed bool) {
	states := c.w.kinds.states[kind]
	c.tokens++
	token := fmt.Sprintf("%s-%s-%d", c.w.tag, c.name, c.tokens)
	eff := c.w.start.Add(-time.Hour).Add(time.Since(c.w.start))
	if c.rng.IntN(8) == 0 {
		eff = eff.Add(-time.Duration(c.rng.Int64N(int64(10 * time.Minute))))
	}
	eff = eff.Truncate(time.Microsecond)
	base.Kind, base.Token, base.State, base.EffectiveFrom, base.RequestID = kind, token, states[c.rng.IntN(len(states))], eff.UnixMicro(), "req-"+token
	req := &consentv1.RecordDecisionRequest{
		NhsNumber: base.NHS, Kind: kind, State: base.State, EffectiveFrom: timestamppb.New(eff),
		DecisionMaker: &consentv1.DecisionMaker{Type: "patient"}, Channel: "in_person",
		Reason: token, RequestId: base.RequestID,
	}
	if base.F == FCAS {
		v := c.seenV[key{base.NHS, kind}]
		base.Expected = &v
		req.ExpectedVersion = &v
	}
	inv := c.w.rec.Invoke(base)
	resp, err := api.Record(ctx, req)
	if err != nil {
		typ, mismatch := classifyWrite(err)
		c.w.rec.Complete(inv, typ, Op{Error: err.Error(), Mismatch: mismatch})
		if typ == TypeInfo {
			// The old process may still act: carry on as a new one.
			c.proc = int(c.w.nextProcess.Add(1) - 1)
		}
		if mismatch {
			// Learn nothing; the next read refreshes the version.
			return false
		}
		return true
	}
	d, cur := resp.GetDecision(), resp.GetConsent()
	res := Op{DecisionID: d.GetId(), Version: d.GetVersion(), Changed: resp.GetChanged(), Duplicate: resp.GetDuplicate(),
		Consent: &ConsentVal{Kind: cur.GetKind(), State: cur.GetState(), Version: cur.GetVersion(), DecisionID: cur.GetDecisionId()}}
	c.w.rec.Complete(inv, TypeOK, res)
	c.seenV[key{base.NHS, kind}] = cur.GetVersion()
	return false
}

//go:build linux

package jepsen

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	consentv1 "github.com/lmc-consent/consentd/proto/consent/v1"
)

// Traps are nemesis steps that set up one read hazard of a leader change
// on purpose and then probe it, rather than waiting for the random
// workload to land in a window a few milliseconds wide. A trap writes a
// probe decision to a patient of its own and reads it back; the probe's
// operations go into the history like any client's, so the ordinary
// checkers judge them, and a correct build passes the same trap.

// starveAbove is the longest raft packet (IP length) a starved follower
// still receives: a heartbeat AppendEntries is about 190 bytes on the wire
// (210 on TLS), one carrying a single decision more than 440.
const starveAbove = 320

// probePatients numbers the probe patients after any the workload uses.
const probePatients = 900_000

// trapRead is how long a probe read may take: longer than the pauses it
// waits out, so a read queued at a stopped node is answered, not abandoned.
const trapRead = 6 * time.Second

func (f Fault) isTrap() bool { return f == NewLeaderReads || f == ResumedLeaderReads }

// trap runs step i, a trap, for at most its hold: attempts until one sets
// the trap and catches a stale read, or the hold is used up. Every
// attempt heals what it did; the step's end is logged by the heal after it.
func (r *runner) trap(ctx context.Context, i int, st Step, w *workload) {
	deadline := time.Now().Add(st.Hold)
	leaderSlot, term := r.currentLeader(ctx, 3*time.Second)
	r.nem.log(NemesisEvent{Step: i, Phase: PhaseStart, Fault: st.Fault, Leader: r.idOf(leaderSlot), Term: term,
		Detail: fmt.Sprintf("trap: up to %v of attempts", st.Hold)})
	set := 0
	var failures []string
	for attempt := 0; ctx.Err() == nil; attempt++ {
		p := &probe{r: r, w: w, step: i, attempt: attempt, nhs: patientNumber(w.seed, probePatients+i*16+attempt),
			kind: w.kinds.names[0]}
		// An attempt needs time for an election, a write and the reads.
		if time.Until(deadline) < 3*time.Second+4*r.cfg.ElectionTimeout {
			break
		}
		var res trapResult
		if st.Fault == NewLeaderReads {
			res = r.newLeaderAttempt(ctx, p, deadline)
		} else {
			res = r.resumedLeaderAttempt(ctx, p, deadline)
		}
		ev := NemesisEvent{Step: i, Phase: PhaseStep, Fault: st.Fault, Action: ActionTrap, Targets: res.targets,
			Detail: fmt.Sprintf("attempt %d on %s: %s", attempt, p.nhs, res.detail)}
		r.nem.log(ev)
		r.log.Info("nemesis: trap", "step", i, "fault", st.Fault, "attempt", attempt, "patient", p.nhs, "set", res.set,
			"stale", res.stale, "detail", res.detail)
		if res.set {
			set++
		} else {
			failures = append(failures, res.detail)
		}
		if res.stale > 0 {
			break
		}
		stop := res.giveUp
		// Undo the attempt before the next: rules cleared, nodes resumed.
		err := r.applyRules(ctx, map[string]NodeRules{})
		did := r.nodes.healAll()
		heal := NemesisEvent{Step: i, Phase: PhaseStep, Fault: st.Fault, Action: ActionTrap,
			Detail: fmt.Sprintf("attempt %d undone; rules cleared; %s", attempt, strings.Join(did, ", "))}
		if err != nil {
			heal.Error = err.Error()
		}
		r.nem.log(heal)
		if stop {
			break
		}
	}
	if set == 0 {
		// Reported as a nemesis failure: the run is then inconclusive, not
		// passed, because the trap it was for was never set.
		r.nem.log(NemesisEvent{Step: i, Phase: PhaseStep, Fault: st.Fault, Action: ActionTrap,
			Error: "trap never set: " + strings.Join(failures, "; ")})
	}
	if d := time.Until(deadline); d > 0 {
		sleepCtx(ctx, d)
	}
}

// trapResult is what one attempt did: whether the hazard was really set
// up (set), and how many probe reads returned less than the probe write
// they followed (stale; the checkers, not this count, decide the verdict).
type trapResult struct {
	set     bool
	stale   int
	targets []string
	detail  string
	// giveUp: another attempt in this step would fail the same way.
	giveUp bool
}

// waitHealthy waits until every member serves linearizable reads.
func (r *runner) waitHealthy(ctx context.Context, timeout time.Duration) error {
	return waitFor(ctx, max(timeout, 0), func(ctx context.Context) error {
		for _, slot := range r.ids {
			if r.nodes.isVacant(slot) {
				continue
			}
			if err := r.apis[slot].Ready(ctx); err != nil {
				return fmt.Errorf("%s: %w", r.idOf(slot), err)
			}
		}
		return nil
	})
}

// newLeaderAttempt sets the NewLeaderReads trap once. With n members and
// a quorum of q, n-q followers are starved: their raft port drops packets
// longer than a heartbeat. A probe write then commits on the leader and
// the q-1 fed followers; the moment it is acknowledged the leader is
// SIGSTOPped, before its next AppendEntries (at most CommitTimeout later,
// and nothing else is written meanwhile) tells the fed followers the probe
// committed. A fed follower wins the election (the starved ones lack the
// probe and vote for it) but cannot commit its first entry, which needs a
// starved follower to take entries, while heartbeats, which the starved
// followers do take, keep confirming its leadership. Until the hold ends,
// reads of the probe hammer every survivor: a leader serving reads before
// its first entry commits answers from a commit index below the probe.
func (r *runner) newLeaderAttempt(ctx context.Context, p *probe, deadline time.Time) trapResult {
	var leaderSlot, leader string
	var oldTerm uint64
	var fed, starved []string
	for try := 0; ; try++ {
		r.waitHealthy(ctx, min(5*time.Second, time.Until(deadline)))
		leaderSlot, oldTerm = r.currentLeader(ctx, 3*time.Second)
		if leaderSlot == "" {
			return trapResult{detail: "no leader to start from"}
		}
		leader = r.idOf(leaderSlot)
		var followers []string
		for _, id := range r.nodes.members() {
			if id != leader {
				followers = append(followers, id)
			}
		}
		quorum := (len(followers)+1)/2 + 1
		rng := stepRand(r.cfg.Seed, p.step*16+p.attempt)
		rng.Shuffle(len(followers), func(a, b int) { followers[a], followers[b] = followers[b], followers[a] })
		connected := func(from, to string) bool { return true }
		if r.cfg.TLS {
			// The starve rule also drops the handshake of a new raft
			// connection (its certificates are longer than a heartbeat), so
			// the new leader can only win and hold on over connections it
			// opened before: a fed follower needs two to a starved one, as
			// a node that once led keeps in its pool, one for heartbeats
			// while the other hangs on the dropped entries.
			connected = func(from, to string) bool {
				n, _ := r.topo.Connections(ctx, r.nodes.slotOf(from), r.ipsByID()[to], raftPort)
				return n >= 2
			}
		}
		var ok bool
		fed, starved, ok = splitFollowers(followers, quorum-1, connected)
		if ok {
			break
		}
		if try > 0 {
			return trapResult{targets: []string{leader}, giveUp: true,
				detail: "not set: on TLS no follower holds two raft connections to another, even after a leader change, so a starved one would not keep hearing a new leader"}
		}
		// Followers dial each other only to run for leader: replace the
		// leader once, and then it is a follower with a leader's pool of
		// connections to the others.
		r.nem.log(NemesisEvent{Step: p.step, Phase: PhaseStep, Fault: NewLeaderReads, Action: ActionTrap, Targets: []string{leader},
			Detail: fmt.Sprintf("attempt %d: no follower holds two raft connections to another (TLS); SIGSTOP %s until another node leads", p.attempt, leader)})
		if err := r.nodes.signal(leaderSlot, syscall.SIGSTOP); err != nil {
			return trapResult{targets: []string{leader}, detail: "SIGSTOP " + leader + ": " + err.Error()}
		}
		r.waitNewLeader(ctx, leaderSlot, oldTerm, 4*time.Second)
		if err := r.nodes.signal(leaderSlot, syscall.SIGCONT); err != nil {
			return trapResult{targets: []string{leader}, detail: "SIGCONT " + leader + ": " + err.Error()}
		}
	}
	ips := r.ipsByID()
	rules := map[string]NodeRules{}
	for _, s := range starved {
		nr := NodeRules{StarvePort: raftPort, StarveAbove: starveAbove}
		for id, ip := range ips {
			if id != s {
				nr.Starved = append(nr.Starved, ip)
			}
		}
		rules[s] = nr
	}
	res := trapResult{targets: append([]string{leader}, starved...)}
	if err := r.applyRules(ctx, rules); err != nil {
		res.detail = "starving " + strings.Join(starved, ",") + ": " + err.Error()
		return res
	}
	release, err := p.w.quietWrites(ctx, r.cfg.OpTimeout+time.Second)
	defer release()
	if err != nil {
		res.detail = err.Error()
		return res
	}
	conns, err := p.dial([]string{leaderSlot}, 1)
	if err != nil {
		res.detail = err.Error()
		return res
	}
	defer closeAll(conns)
	written, index, ok := p.write(ctx, conns[leaderSlot][0], leaderSlot)
	if !ok {
		res.detail = "probe write through " + leader + " not acknowledged: " + written.Error
		return res
	}
	stopErr := r.nodes.signal(leaderSlot, syscall.SIGSTOP)
	if stopErr != nil {
		res.detail = "SIGSTOP " + leader + ": " + stopErr.Error()
		return res
	}
	// The trap is set only if no fed follower learned that the probe
	// committed; otherwise whichever wins serves it, broken or not.
	var knew []string
	for _, id := range fed {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := r.apis[r.nodes.slotOf(id)].Status(c)
		cancel()
		if err != nil {
			knew = append(knew, id+" (status: "+err.Error()+")")
		} else if st.GetCommitIndex() >= index {
			knew = append(knew, fmt.Sprintf("%s (commit index %d)", id, st.GetCommitIndex()))
		}
	}
	if len(knew) > 0 {
		res.detail = fmt.Sprintf("probe %s at index %d acknowledged by %s, then SIGSTOP; not set: %s already knew it committed",
			written.Token, index, leader, strings.Join(knew, ", "))
		return res
	}
	var survivors []string
	for _, id := range append(append([]string(nil), fed...), starved...) {
		survivors = append(survivors, r.nodes.slotOf(id))
	}
	hammer, err := p.dial(survivors, 2)
	if err != nil {
		res.detail = err.Error()
		return res
	}
	defer closeAll(hammer)
	until := deadline.Add(-500 * time.Millisecond)
	watchCtx, stopWatch := context.WithCancel(ctx)
	seen := make(chan string, 1)
	go func() { seen <- r.watchUncommittedLeader(watchCtx, survivors, oldTerm, index) }()
	stale, reads := p.hammer(ctx, hammer, written.Version, until)
	stopWatch()
	newLeader := <-seen
	res.stale = stale
	counts, countErr := r.starveCounts(ctx, starved)
	// Set only if the hazard was really there: a survivor led a newer term
	// while its commit index was below the probe (on TLS, for one, the
	// starve rule also drops the handshake of a new raft connection, and no
	// new leader is elected), and the starve rule dropped entries.
	res.set = newLeader != "" && countErr == nil && counts.Dropped > 0
	res.detail = fmt.Sprintf("probe %s v%d at index %d acknowledged by %s, which was then SIGSTOPped before %s learned it committed; "+
		"%s starved of log entries (raft packets over %d bytes: %d dropped, %d smaller passed); %d probe reads of the survivors, %d returned less than v%d",
		written.Token, written.Version, index, leader, strings.Join(fed, ","), strings.Join(starved, ","),
		starveAbove, counts.Dropped, counts.Passed, reads, stale, written.Version)
	switch {
	case countErr != nil:
		res.detail += "; not set: reading the starve counters: " + countErr.Error()
	case counts.Dropped == 0:
		res.detail += "; not set: the starve rule dropped nothing"
	case newLeader == "":
		res.detail += fmt.Sprintf("; not set: no survivor was seen leading a term after %d with commit index below %d", oldTerm, index)
	default:
		res.detail += "; " + newLeader
	}
	return res
}

// watchUncommittedLeader polls the survivors until ctx ends and describes
// the first one seen leading a term after oldTerm with its commit index
// below probe: the new leader the trap is for. "" if none was seen.
func (r *runner) watchUncommittedLeader(ctx context.Context, survivors []string, oldTerm, probe uint64) string {
	for ctx.Err() == nil {
		for _, slot := range survivors {
			c, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			st, err := r.apis[slot].Status(c)
			cancel()
			if err == nil && st.GetState() == "leader" && st.GetTerm() > oldTerm && st.GetCommitIndex() < probe {
				return fmt.Sprintf("%s led term %d with commit index %d, below the probe", r.idOf(slot), st.GetTerm(), st.GetCommitIndex())
			}
		}
		sleepCtx(ctx, 50*time.Millisecond)
	}
	return ""
}

// starveCounts sums the starve rules' counters of the starved nodes.
func (r *runner) starveCounts(ctx context.Context, starved []string) (StarveCounts, error) {
	var sum StarveCounts
	for _, id := range starved {
		c, err := r.topo.StarveCounts(ctx, r.nodes.slotOf(id))
		if err != nil {
			return sum, err
		}
		sum.Passed += c.Passed
		sum.Dropped += c.Dropped
	}
	return sum, nil
}

// resumedLeaderAttempt sets the ResumedLeaderReads trap once: the leader
// is SIGSTOPped and cut off from the other nodes; once another node leads,
// a probe write goes through it; then linearizable reads of the probe are
// sent to the stopped old leader over connections opened before it
// stopped, where they wait in its sockets; then it is resumed, still cut
// off, so that only its own lease check can tell it that it was replaced.
// A node that trusts its local leader state serves the queued reads from
// its register, which lacks the probe — if they reach it before raft's
// lease check, which runs as soon as the process resumes, steps it down.
// Usually they do not: against LocalLeaderRead this trap returned stale
// reads in 2 of 14 measured steps (both with other runs loading the CPU),
// which is why new-leader-reads, not this, is what catches that bug. It is
// counted as set when the hazard was staged.
func (r *runner) resumedLeaderAttempt(ctx context.Context, p *probe, deadline time.Time) trapResult {
	r.waitHealthy(ctx, min(5*time.Second, time.Until(deadline)))
	oldSlot, oldTerm := r.currentLeader(ctx, 3*time.Second)
	if oldSlot == "" {
		return trapResult{detail: "no leader to start from"}
	}
	old := r.idOf(oldSlot)
	res := trapResult{targets: []string{old}}
	// Opened and used now: a stopped server cannot finish an HTTP/2
	// handshake, so reads sent later on a new connection never reach it.
	queued, err := p.dial([]string{oldSlot}, 8)
	if err != nil {
		res.detail = err.Error()
		return res
	}
	defer closeAll(queued)
	for _, a := range queued[oldSlot] {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := a.Status(c)
		cancel()
		if err != nil {
			res.detail = "warming a connection to " + old + ": " + err.Error()
			return res
		}
	}
	if err := r.nodes.signal(oldSlot, syscall.SIGSTOP); err != nil {
		res.detail = "SIGSTOP " + old + ": " + err.Error()
		return res
	}
	g, _ := PlanPartition(PartitionLeader, r.nodes.members(), old, stepRand(r.cfg.Seed, p.step))
	if err := r.applyRules(ctx, rulesFor(r.nodes.members(), r.ipsByID(), g, 0)); err != nil {
		res.detail = "cutting off " + old + ": " + err.Error()
		return res
	}
	newSlot := r.waitNewLeader(ctx, oldSlot, oldTerm, time.Until(deadline)-2*time.Second)
	if newSlot == "" {
		res.detail = "no new leader while " + old + " was stopped"
		return res
	}
	res.targets = append(res.targets, r.idOf(newSlot))
	through, err := p.dial([]string{newSlot}, 1)
	if err != nil {
		res.detail = err.Error()
		return res
	}
	defer closeAll(through)
	var written Op
	var index uint64
	ok := false
	// The new leader may still be committing its first entry: retry a
	// definite failure briefly.
	for try := 0; try < 20 && !ok && time.Until(deadline) > 2*time.Second; try++ {
		written, index, ok = p.write(ctx, through[newSlot][0], newSlot)
		if !ok && written.Type == TypeFail {
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		break
	}
	if !ok {
		res.detail = "probe write through " + r.idOf(newSlot) + " not acknowledged: " + written.Error
		return res
	}
	var stale, reads atomic.Int64
	var wg sync.WaitGroup
	for _, a := range queued[oldSlot] {
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				reads.Add(1)
				if v, ok := p.read(ctx, a, oldSlot, trapRead); ok && v < written.Version {
					stale.Add(1)
				}
			}()
		}
	}
	// Long enough for the requests to be written into the stopped node's
	// socket buffers.
	sleepCtx(ctx, 300*time.Millisecond)
	contErr := r.nodes.signal(oldSlot, syscall.SIGCONT)
	// Still cut off, so that no message from the new leader deposes it
	// before its own lease check does.
	sleepCtx(ctx, time.Second)
	r.applyRules(ctx, map[string]NodeRules{})
	wg.Wait()
	res.set = contErr == nil
	res.stale = int(stale.Load())
	res.detail = fmt.Sprintf("%s SIGSTOPped and cut off in term %d; probe %s v%d acknowledged by %s at index %d; %d probe reads queued at %s, then SIGCONT; %d returned less than v%d",
		old, oldTerm, written.Token, written.Version, r.idOf(newSlot), index, reads.Load(), old, res.stale, written.Version)
	if contErr != nil {
		res.detail += "; SIGCONT: " + contErr.Error()
	}
	return res
}

// waitNewLeader waits up to timeout for a node other than oldSlot to lead
// a term after oldTerm, and returns its slot ("" if none did).
func (r *runner) waitNewLeader(ctx context.Context, oldSlot string, oldTerm uint64, timeout time.Duration) string {
	var newSlot string
	waitFor(ctx, timeout, func(ctx context.Context) error {
		for _, slot := range r.ids {
			if slot == oldSlot || r.nodes.isVacant(slot) {
				continue
			}
			st, err := r.apis[slot].Status(ctx)
			if err == nil && st.GetState() == "leader" && st.GetTerm() > oldTerm {
				newSlot = slot
				return nil
			}
		}
		return errors.New("no new leader yet")
	})
	return newSlot
}

// probe writes and reads one patient of its own for one trap attempt; its
// operations are recorded in the history, each on a fresh process.
type probe struct {
	r       *runner
	w       *workload
	step    int
	attempt int
	nhs     string
	kind    string
	n       atomic.Int64
}

func (p *probe) base(node, f string) Op {
	return Op{Process: int(p.w.nextProcess.Add(1) - 1), Client: fmt.Sprintf("probe-s%d-a%d", p.step, p.attempt), Node: node,
		Proto: "grpc", F: f, NHS: p.nhs}
}

// dial opens per gRPC connections to each slot.
func (p *probe) dial(slots []string, per int) (map[string][]*grpcAPI, error) {
	out := map[string][]*grpcAPI{}
	for _, slot := range slots {
		for range per {
			g, err := newGRPCAPI(p.r.nodes.addr(slot, grpcPort), p.r.dialer.DialContext, p.r.tls.workload)
			if err != nil {
				closeAll(out)
				return nil, err
			}
			out[slot] = append(out[slot], g)
		}
	}
	return out, nil
}

func closeAll(conns map[string][]*grpcAPI) {
	for _, l := range conns {
		for _, g := range l {
			g.Close()
		}
	}
}

// write records the probe decision through api and returns its completion
// and raft index; ok only when it was acknowledged.
func (p *probe) write(ctx context.Context, api nodeAPI, node string) (Op, uint64, bool) {
	token := fmt.Sprintf("%s-probe-s%d-a%d-%d", p.w.tag, p.step, p.attempt, p.n.Add(1))
	states := p.w.kinds.states[p.kind]
	eff := p.w.start.Add(-time.Hour).Add(time.Since(p.w.start)).Truncate(time.Microsecond)
	base := p.base(node, FWrite)
	base.Kind, base.Token, base.State, base.EffectiveFrom, base.RequestID = p.kind, token, states[len(states)-1], eff.UnixMicro(), "req-"+token
	inv := p.w.rec.Invoke(base)
	c, cancel := context.WithTimeout(ctx, p.r.cfg.OpTimeout)
	defer cancel()
	resp, err := api.Record(c, &consentv1.RecordDecisionRequest{NhsNumber: p.nhs, Kind: p.kind, State: base.State,
		EffectiveFrom: timestamppb.New(eff), DecisionMaker: &consentv1.DecisionMaker{Type: "patient"}, Channel: "in_person",
		Reason: token, RequestId: base.RequestID})
	if err != nil {
		typ, mismatch := classifyWrite(err)
		done := Op{Error: err.Error(), Mismatch: mismatch}
		p.w.rec.Complete(inv, typ, done)
		done.Type, done.Token = typ, token
		return done, 0, false
	}
	d, cur := resp.GetDecision(), resp.GetConsent()
	done := Op{DecisionID: d.GetId(), Version: d.GetVersion(), Changed: resp.GetChanged(), Duplicate: resp.GetDuplicate(),
		Consent: &ConsentVal{Kind: cur.GetKind(), State: cur.GetState(), Version: cur.GetVersion(), DecisionID: cur.GetDecisionId()}}
	p.w.rec.Complete(inv, TypeOK, done)
	done.Type, done.Token = TypeOK, token
	return done, d.GetRevision(), true
}

// read records one linearizable read of the probe patient and returns the
// version of the probe's kind it saw; ok only when the read succeeded.
func (p *probe) read(ctx context.Context, api nodeAPI, node string, timeout time.Duration) (uint64, bool) {
	inv := p.w.rec.Invoke(p.base(node, FRead))
	c, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := api.Consents(c, p.nhs, "")
	if err != nil {
		p.w.rec.Complete(inv, TypeFail, Op{Error: err.Error()})
		return 0, false
	}
	res := Op{Revision: resp.GetRevision()}
	var v uint64
	for _, cs := range resp.GetConsents() {
		res.Consents = append(res.Consents, ConsentVal{Kind: cs.GetKind(), State: cs.GetState(), Version: cs.GetVersion(), DecisionID: cs.GetDecisionId()})
		if cs.GetKind() == p.kind {
			v = cs.GetVersion()
		}
	}
	p.w.rec.Complete(inv, TypeOK, res)
	return v, true
}

// hammer reads the probe on every connection, one read at a time each,
// until until; it returns how many reads saw less than version, and how
// many it made.
func (p *probe) hammer(ctx context.Context, conns map[string][]*grpcAPI, version uint64, until time.Time) (stale, reads int) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, slot := range slices.Sorted(maps.Keys(conns)) {
		for _, a := range conns[slot] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					left := time.Until(until)
					if left < 50*time.Millisecond {
						return
					}
					v, ok := p.read(ctx, a, slot, min(left, time.Second))
					mu.Lock()
					reads++
					if ok && v < version {
						stale++
					}
					mu.Unlock()
					sleepCtx(ctx, 5*time.Millisecond)
				}
			}()
		}
	}
	wg.Wait()
	return stale, reads
}

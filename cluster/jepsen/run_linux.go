//go:build linux

package jepsen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Run runs one scenario end to end — namespaces, nodes, workload, nemeses,
// final heal and reads — then checks the saved report. The report folder is
// cfg.ReportDir. An error means the run itself could not be carried out;
// a run that was carried out returns its verdict in Results.
func Run(ctx context.Context, cfg Config) (Results, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return Results{}, err
	}
	if err := Prerequisites(); err != nil {
		return Results{}, err
	}
	sc, _ := LookupScenario(cfg.Scenario)
	log := cfg.Logger.With("scenario", sc.Name, "seed", cfg.Seed)
	if err := os.MkdirAll(cfg.ReportDir, 0o755); err != nil {
		return Results{}, err
	}
	dataRoot, err := os.MkdirTemp("", "consent-jepsen-")
	if err != nil {
		return Results{}, err
	}
	defer os.RemoveAll(dataRoot)

	var ids []string
	for i := 1; i <= cfg.Nodes; i++ {
		ids = append(ids, fmt.Sprintf("n%d", i))
	}
	topo := NewTopology(cfg.Prefix, cfg.Octet, ids, log)
	// Deferred first so it runs last, after the nodes are gone, also when a
	// panic unwinds this goroutine.
	defer func() {
		if err := topo.Down(); err != nil {
			log.Error("tearing down namespaces", "err", err)
		}
	}()
	if err := topo.Up(ctx); err != nil {
		return Results{}, fmt.Errorf("topology: %w", err)
	}
	dialer, err := NewNSDialer(topo.CtlNS(), 4)
	if err != nil {
		return Results{}, err
	}
	defer dialer.Close()

	extraArgs := append([]string(nil), sc.NodeArgs...)
	schedule := GenerateSchedule(cfg.Seed, sc, ScheduleConfig{Duration: cfg.Duration, ElectionTimeout: cfg.ElectionTimeout})
	var certs certDir
	var callers callerTLS
	if cfg.TLS {
		// In the work dir, not the report: the keys are of no use after the run.
		certs = certDir(filepath.Join(dataRoot, "certs"))
		var hosts []string
		for _, id := range ids {
			hosts = append(hosts, topo.IP(id))
		}
		if err := issueCerts(ctx, cfg.Binary, certs, certNodeIDs(ids, replacementsBound(schedule)), hosts); err != nil {
			return Results{}, err
		}
		if callers, err = certs.callerTLS(); err != nil {
			return Results{}, err
		}
	}
	runInfo := RunInfo{Scenario: sc.Name, Seed: cfg.Seed, TLS: cfg.TLS, Nodes: ids, DurationMs: cfg.Duration.Milliseconds(),
		ElectionTimeoutMs: cfg.ElectionTimeout.Milliseconds(), RecoveryBoundMs: cfg.RecoveryBound.Milliseconds(),
		CheckTimeoutMs: cfg.CheckTimeout.Milliseconds(), NeedsLeaderChange: sc.NeedsLeaderChange && len(schedule) > 0,
		NodeArgs: extraArgs, SnapshotStress: sc.SnapshotStress, Schedule: schedule}
	if err := writeJSON(filepath.Join(cfg.ReportDir, FileRun), runInfo); err != nil {
		return Results{}, err
	}

	start := time.Now()
	rec, err := NewRecorder(filepath.Join(cfg.ReportDir, FileHistory), start)
	if err != nil {
		return Results{}, err
	}
	defer rec.Close()
	nodes := newNodeSet(topo, cfg.Binary, ids, dataRoot, cfg.ReportDir, certs, cfg, extraArgs, rec.Now)
	defer nodes.killAllNow()

	r := &runner{cfg: cfg, log: log, topo: topo, dialer: dialer, nodes: nodes, rec: rec, ids: ids, apis: map[string]*restAPI{},
		pinnedGRPC: map[string][]*grpcAPI{}, tls: callers}
	for _, id := range ids {
		r.apis[id] = newRESTAPI(nodes.addr(id, httpPort), dialer.DialContext, callers.control)
	}
	if err := r.startCluster(ctx); err != nil {
		return Results{}, err
	}
	nem, err := newNemesisLog(filepath.Join(cfg.ReportDir, FileNemesis), rec.Now)
	if err != nil {
		return Results{}, err
	}
	defer nem.close()
	r.nem = nem

	monitorCtx, stopMonitor := context.WithCancel(ctx)
	var monitorWG sync.WaitGroup
	monitorWG.Add(1)
	go r.monitorLeaders(monitorCtx, &monitorWG)

	w, err := r.newWorkload(ctx, start)
	if err != nil {
		stopMonitor()
		return Results{}, err
	}
	workCtx, stopWork := context.WithCancel(ctx)
	var workWG sync.WaitGroup
	clients, err := r.newClients(w)
	if err != nil {
		stopWork()
		stopMonitor()
		return Results{}, err
	}
	for _, c := range clients {
		workWG.Add(1)
		go c.run(workCtx, &workWG)
	}
	// The schedule counts from here, so cluster start-up takes none of
	// the warm-up or fault time.
	faultsFrom := time.Now()
	log.Info("workload started", "clients", len(clients), "steps", len(schedule))

	r.runSchedule(ctx, schedule, faultsFrom, w)
	if d := time.Until(faultsFrom.Add(cfg.Duration)); d > 0 && ctx.Err() == nil {
		sleepCtx(ctx, d)
	}
	final := Final{ConvergedAfterMs: -1}
	final.HealTime = r.healAll(context.WithoutCancel(ctx), -1, "final heal")
	sleepCtx(ctx, cfg.Quiet)
	stopWork()
	workWG.Wait()
	for _, c := range clients {
		for _, a := range c.apis {
			a.Close()
		}
	}
	if ctx.Err() != nil {
		stopMonitor()
		return Results{}, ctx.Err()
	}
	log.Info("workload stopped; waiting for convergence")
	r.finish(ctx, &final, rec.Ops())
	stopMonitor()
	monitorWG.Wait()
	if ctx.Err() != nil {
		return Results{}, fmt.Errorf("interrupted: %w", ctx.Err())
	}
	final.NodeExits = append(nodes.unexpectedExits(), nodes.stopAll(stopTimeout)...)
	if err := rec.Close(); err != nil {
		return Results{}, err
	}
	if err := writeJSON(filepath.Join(cfg.ReportDir, FileFinal), final); err != nil {
		return Results{}, err
	}
	if err := writeJSONL(filepath.Join(cfg.ReportDir, FileLeaders), r.leaderObs()); err != nil {
		return Results{}, err
	}
	nem.close()
	return CheckDir(cfg.ReportDir)
}

// issueCerts makes the run's CA and certificates with the binary under
// test: one node certificate per raft id, each valid for every node
// address, and the sample callers.
func issueCerts(ctx context.Context, bin string, dir certDir, ids, hosts []string) error {
	out, err := exec.CommandContext(ctx, bin, "certs", "--dir", string(dir),
		"--nodes", strings.Join(ids, ","), "--hosts", strings.Join(hosts, ",")).CombinedOutput()
	if err != nil {
		return fmt.Errorf("consentd certs: %w\n%s", err, out)
	}
	return nil
}

// stopTimeout is how long a node may take to stop after SIGTERM: longer
// than consentd's own 30s shutdown deadline.
const stopTimeout = 35 * time.Second

type runner struct {
	cfg    Config
	log    *slog.Logger
	topo   *Topology
	dialer *NSDialer
	nodes  *nodeSet
	rec    *Recorder
	nem    *nemesisLog
	// ids are the slots (namespaces) n1..nN; r.nodes.idOf maps one to the
	// raft id of the process it holds now.
	ids []string
	// apis are the controller's: status polls, readiness and final reads.
	apis map[string]*restAPI
	// tls are the callers' client configurations; nil ones on plain TCP.
	tls callerTLS
	// pinnedGRPC are the gRPC connections of clients pinned to a slot,
	// woken up when the slot gets a new process.
	pinnedGRPC map[string][]*grpcAPI
	// changes admits one membership change at a time.
	changes changeGuard

	mu      sync.Mutex
	leaders []LeaderObs
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// waitFor polls cond until it holds or timeout passes; cond runs at least
// once, each attempt bounded to two seconds.
func waitFor(ctx context.Context, timeout time.Duration, cond func(context.Context) error) error {
	deadline := time.Now().Add(timeout)
	for {
		attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := cond(attempt)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("not within %v: %w", timeout, err)
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
}

// startCluster bootstraps the first node, then joins the others one by
// one, and waits until every node serves linearizable reads with all
// members present.
func (r *runner) startCluster(ctx context.Context) error {
	for _, id := range r.ids {
		if err := r.nodes.start(id); err != nil {
			return err
		}
		if err := waitFor(ctx, 60*time.Second, r.apis[id].Ready); err != nil {
			return fmt.Errorf("%s never became ready (see %s.log): %w", id, id, err)
		}
	}
	return waitFor(ctx, 60*time.Second, func(ctx context.Context) error {
		for _, id := range r.ids {
			st, err := r.apis[id].Status(ctx)
			if err != nil {
				return err
			}
			if len(st.GetMembers()) != len(r.ids) {
				return fmt.Errorf("%s sees %d members", id, len(st.GetMembers()))
			}
			if err := r.apis[id].Ready(ctx); err != nil {
				return fmt.Errorf("%s: %w", id, err)
			}
		}
		return nil
	})
}

func (r *runner) newWorkload(ctx context.Context, start time.Time) (*workload, error) {
	var kinds kindStates
	err := waitFor(ctx, 30*time.Second, func(ctx context.Context) error {
		resp, err := r.apis[r.ids[0]].Kinds(ctx)
		if err != nil {
			return err
		}
		kinds = kindsFrom(resp)
		if len(kinds.names) == 0 {
			return errors.New("the registry lists no kinds")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &workload{seed: r.cfg.Seed, rec: r.rec, kinds: kinds, rotateEvery: r.cfg.RotateEvery, opTimeout: r.cfg.OpTimeout,
		start: start, tag: fmt.Sprintf("j%d", r.cfg.Seed)}, nil
}

// newClients makes ClientsPerNode clients pinned to each node (alternating
// gRPC and REST) and FailoverClients that move on after an error.
func (r *runner) newClients(w *workload) ([]*wclient, error) {
	var out []*wclient
	mk := func(pinned, proto string, first string) (*wclient, error) {
		c := &wclient{w: w, proto: proto, pinned: pinned, node: first, proc: len(out), slot: len(out), seenV: map[key]uint64{},
			rng: rand.New(rand.NewPCG(uint64(w.seed), uint64(len(out))+100)), apis: map[string]nodeAPI{}}
		if pinned != "" {
			c.name = fmt.Sprintf("c%d-%s-%s", len(out), pinned, proto)
			c.nodes = []string{pinned}
		} else {
			c.name = fmt.Sprintf("c%d-failover-%s", len(out), proto)
			c.nodes = r.ids
		}
		for _, id := range c.nodes {
			if proto == "grpc" {
				g, err := newGRPCAPI(r.nodes.addr(id, grpcPort), r.dialer.DialContext, r.tls.workload)
				if err != nil {
					return nil, err
				}
				c.apis[id] = g
				if pinned != "" {
					r.pinnedGRPC[id] = append(r.pinnedGRPC[id], g)
				}
			} else {
				c.apis[id] = newRESTAPI(r.nodes.addr(id, httpPort), r.dialer.DialContext, r.tls.workload)
			}
		}
		return c, nil
	}
	protos := []string{"grpc", "rest"}
	add := func(pinned, proto, first string) error {
		c, err := mk(pinned, proto, first)
		if err == nil {
			out = append(out, c)
		}
		return err
	}
	for _, id := range r.ids {
		for i := 0; i < r.cfg.ClientsPerNode; i++ {
			if err := add(id, protos[i%2], id); err != nil {
				return nil, err
			}
		}
	}
	for i := 0; i < r.cfg.FailoverClients; i++ {
		if err := add("", protos[i%2], r.ids[i%len(r.ids)]); err != nil {
			return nil, err
		}
	}
	w.nextProcess.Store(int64(len(out)))
	w.perEpoch = (len(out) + 7) / 8
	return out, nil
}

// monitorLeaders polls every node's status through the ctl namespace.
func (r *runner) monitorLeaders(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		var pwg sync.WaitGroup
		for _, id := range r.ids {
			pwg.Add(1)
			go func() {
				defer pwg.Done()
				c, cancel := context.WithTimeout(ctx, 400*time.Millisecond)
				defer cancel()
				st, err := r.apis[id].Status(c)
				if err != nil {
					return
				}
				r.mu.Lock()
				r.leaders = append(r.leaders, LeaderObs{Time: r.rec.Now(), Node: r.nodes.idOf(id), State: st.GetState(), Leader: st.GetLeaderId(), Term: st.GetTerm()})
				r.mu.Unlock()
			}()
		}
		pwg.Wait()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (r *runner) leaderObs() []LeaderObs {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := append([]LeaderObs(nil), r.leaders...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time < out[j].Time })
	return out
}

// currentLeader asks every node and returns the slot of the one that
// claims leadership in the highest term; it waits up to wait for one to
// appear.
func (r *runner) currentLeader(ctx context.Context, wait time.Duration) (string, uint64) {
	var leader string
	var term uint64
	waitFor(ctx, wait, func(ctx context.Context) error {
		leader, term = "", 0
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, id := range r.ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
				defer cancel()
				st, err := r.apis[id].Status(c)
				if err != nil || st.GetState() != "leader" {
					return
				}
				mu.Lock()
				if st.GetTerm() > term {
					leader, term = id, st.GetTerm()
				}
				mu.Unlock()
			}()
		}
		wg.Wait()
		if leader == "" {
			return errors.New("no leader")
		}
		return nil
	})
	return leader, term
}

// runSchedule realises each step at its time: apply, hold, heal.
func (r *runner) runSchedule(ctx context.Context, steps []Step, start time.Time, w *workload) {
	for i, st := range steps {
		if d := time.Until(start.Add(st.At)); d > 0 {
			sleepCtx(ctx, d)
		}
		if ctx.Err() != nil {
			return
		}
		if st.Fault.isTrap() {
			r.trap(ctx, i, st, w)
		} else {
			r.apply(ctx, i, st)
			sleepCtx(ctx, st.Hold)
		}
		if ctx.Err() != nil {
			return
		}
		r.heal(ctx, i, st, w)
	}
}

func (r *runner) apply(ctx context.Context, i int, st Step) {
	if st.Fault == Membership {
		r.removeMember(ctx, i, st)
		return
	}
	leaderSlot, term := r.currentLeader(ctx, 3*time.Second)
	leader := r.idOf(leaderSlot)
	// Targets are planned over raft ids, in slot order, so the same seed
	// picks the same slots whatever the ids are now.
	members := r.nodes.members()
	rng := stepRand(r.cfg.Seed, i)
	ev := NemesisEvent{Step: i, Phase: PhaseStart, Fault: st.Fault, Leader: leader, Term: term}
	var errs []error
	pickFollower := func() string {
		var fs []string
		for _, id := range members {
			if id != leader {
				fs = append(fs, id)
			}
		}
		return fs[rng.IntN(len(fs))]
	}
	orRandom := func(id string) string {
		if id == "" {
			return members[rng.IntN(len(members))]
		}
		return id
	}
	switch st.Fault {
	case PartitionLeader, PartitionFollower, PartitionMajority, PartitionBridge, PartitionOneWay:
		g, targets := PlanPartition(st.Fault, members, leader, rng)
		ev.Targets, ev.Detail = targets, g.String()
		errs = append(errs, r.applyRules(ctx, rulesFor(members, r.ipsByID(), g, 0)))
	case Loss:
		ev.Targets, ev.Detail = members, fmt.Sprintf("drop %d%% of packets between nodes", st.LossPercent)
		errs = append(errs, r.applyRules(ctx, rulesFor(members, r.ipsByID(), Grudge{}, st.LossPercent)))
	case PauseLeader, PauseFollower:
		target := orRandom(leader)
		if st.Fault == PauseFollower {
			target = pickFollower()
		}
		ev.Targets, ev.Detail = []string{target}, fmt.Sprintf("SIGSTOP for %v", st.Hold)
		errs = append(errs, r.nodes.signal(r.nodes.slotOf(target), syscall.SIGSTOP))
	case KillLeader, KillFollower:
		target := orRandom(leader)
		if st.Fault == KillFollower {
			target = pickFollower()
		}
		ev.Targets, ev.Detail = []string{target}, fmt.Sprintf("SIGKILL, restart after %v", st.Hold)
		errs = append(errs, r.nodes.kill(r.nodes.slotOf(target)))
	case KillAll:
		ev.Targets, ev.Detail = members, fmt.Sprintf("SIGKILL every node, restart all after %v, then read at once", st.Hold)
		for _, id := range members {
			errs = append(errs, r.nodes.kill(r.nodes.slotOf(id)))
		}
	}
	if err := errors.Join(errs...); err != nil {
		ev.Error = err.Error()
	}
	r.nem.log(ev)
	r.log.Info("nemesis", "step", i, "fault", st.Fault, "targets", ev.Targets, "leader", leader, "detail", ev.Detail)
}

// idOf is the raft id of a slot's process; "" for "".
func (r *runner) idOf(slot string) string {
	if slot == "" {
		return ""
	}
	return r.nodes.idOf(slot)
}

// ipsByID maps the current raft id of every slot to its address.
func (r *runner) ipsByID() map[string]string {
	out := make(map[string]string, len(r.ids))
	for _, slot := range r.ids {
		out[r.nodes.idOf(slot)] = r.topo.IP(slot)
	}
	return out
}

// applyRules installs rules, keyed by raft id, in every slot's namespace;
// a slot without an entry gets none.
func (r *runner) applyRules(ctx context.Context, rules map[string]NodeRules) error {
	var errs []error
	for _, slot := range r.ids {
		errs = append(errs, r.topo.ApplyRules(ctx, slot, rules[r.nodes.idOf(slot)]))
	}
	return errors.Join(errs...)
}

// heal undoes a step: rules cleared, paused nodes resumed, killed nodes
// restarted. Healing everything each time keeps the states simple.
func (r *runner) heal(ctx context.Context, i int, st Step, w *workload) {
	r.healAll(ctx, i, string(st.Fault))
	if st.Fault == KillAll {
		w.readBurst.Add(1)
	}
}

// healAll clears every fault, brings a removed member back with a fresh
// id, and logs it; it returns the time it did so.
func (r *runner) healAll(ctx context.Context, step int, what string) int64 {
	var errs []error
	if err := r.applyRules(ctx, map[string]NodeRules{}); err != nil {
		errs = append(errs, err)
	}
	did := r.nodes.healAll()
	did = append(did, r.rejoinVacant(ctx, step)...)
	leaderSlot, term := r.currentLeader(ctx, 0)
	leader := r.idOf(leaderSlot)
	phase := PhaseEnd
	if step < 0 {
		phase = PhaseHeal
	}
	ev := NemesisEvent{Step: step, Phase: phase, Leader: leader, Term: term, Detail: strings.TrimSpace(what + "; rules cleared; " + strings.Join(did, ", "))}
	if err := errors.Join(errs...); err != nil {
		ev.Error = err.Error()
	}
	return r.nem.log(ev)
}

// finish waits for the nodes to agree, then reads every touched patient's
// consents and full history from every node, linearizably.
func (r *runner) finish(ctx context.Context, final *Final, ops []Op) {
	final.StopTime = r.rec.Now()
	final.Nodes = map[string]NodeFinal{}
	final.Members, final.Retired = r.nodes.members(), r.nodes.retiredIDs()
	want := append([]string(nil), final.Members...)
	sort.Strings(want)
	// The final reads go to the members as they are now, by slot.
	var slots []string
	for _, slot := range r.ids {
		if !r.nodes.isVacant(slot) {
			slots = append(slots, slot)
		}
	}
	err := waitFor(ctx, 90*time.Second, func(ctx context.Context) error {
		var applied uint64
		var digest string
		for i, slot := range slots {
			id := r.nodes.idOf(slot)
			if err := r.apis[slot].Ready(ctx); err != nil {
				return fmt.Errorf("%s: %w", id, err)
			}
			st, err := r.apis[slot].Status(ctx)
			if err != nil {
				return fmt.Errorf("%s: %w", id, err)
			}
			if voters, others := votersOf(st.GetMembers()); strings.Join(voters, ",") != strings.Join(want, ",") || len(others) > 0 {
				return fmt.Errorf("%s sees voters %v and others %v, want %v", id, voters, others, want)
			}
			if i == 0 {
				applied, digest = st.GetAppliedIndex(), st.GetStateDigest()
			} else if st.GetAppliedIndex() != applied || st.GetStateDigest() != digest {
				return fmt.Errorf("%s at %d, %s at %d", id, st.GetAppliedIndex(), r.nodes.idOf(slots[0]), applied)
			}
		}
		return nil
	})
	if err == nil {
		final.ConvergedAfterMs = (r.rec.Now() - final.StopTime) / int64(time.Millisecond)
	} else {
		final.SetupError = "convergence: " + err.Error()
	}
	patients := map[string]bool{}
	for _, op := range ops {
		patients[op.NHS] = true
	}
	// One deadline for all final reads, so an unhealthy cluster fails the
	// run in minutes rather than retrying every patient on every node.
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	for _, slot := range slots {
		nf := NodeFinal{Consents: map[string][]ConsentVal{}, Histories: map[string]map[string][]DecisionVal{}}
		api := r.apis[slot]
		for _, nhs := range sortedKeys(patients) {
			err := waitFor(ctx, 30*time.Second, func(ctx context.Context) error {
				resp, err := api.Consents(ctx, nhs, "")
				if err != nil {
					return err
				}
				var cs []ConsentVal
				kinds := map[string][]DecisionVal{}
				for _, c := range resp.GetConsents() {
					cs = append(cs, ConsentVal{Kind: c.GetKind(), State: c.GetState(), Version: c.GetVersion(), DecisionID: c.GetDecisionId()})
					kinds[c.GetKind()] = []DecisionVal{}
				}
				ds, _, err := allDecisions(ctx, api, nhs, "")
				if err != nil {
					return err
				}
				for _, d := range ds {
					kinds[d.GetKind()] = append(kinds[d.GetKind()], DecisionVal{ID: d.GetId(), Kind: d.GetKind(), State: d.GetState(),
						Reason: d.GetReason(), RequestID: d.GetRequestId(), Version: d.GetVersion(), Revision: d.GetRevision(),
						EffectiveFrom: d.GetEffectiveFrom().AsTime().UnixMicro()})
				}
				nf.Consents[nhs], nf.Histories[nhs] = cs, kinds
				return nil
			})
			if err != nil {
				nf.Errors = append(nf.Errors, fmt.Sprintf("%s: %v", nhs, err))
			}
		}
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := api.Status(c)
		cancel()
		if err != nil {
			nf.Errors = append(nf.Errors, "status: "+err.Error())
		} else {
			voters, others := votersOf(st.GetMembers())
			nf.Status = StatusVal{ID: st.GetId(), State: st.GetState(), Leader: st.GetLeaderId(), Term: st.GetTerm(),
				CommitIndex: st.GetCommitIndex(), AppliedIndex: st.GetAppliedIndex(), StateDigest: st.GetStateDigest(), Members: len(st.GetMembers()),
				MemberIDs: append(voters, others...)}
		}
		final.Nodes[r.nodes.idOf(slot)] = nf
	}
}

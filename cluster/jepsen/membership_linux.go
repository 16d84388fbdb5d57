//go:build linux

package jepsen

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// The membership nemesis, in two halves that fit the schedule's apply,
// hold, heal: removeMember (apply) asks a node's API to remove a member,
// then stops its process and wipes its data, so the cluster runs one
// member short for the hold; rejoinVacant (every heal) starts the slot's
// next process with a fresh raft id and --join, and waits until it is a
// voter serving linearizable reads. Every part is logged to nemesis.jsonl
// as a PhaseStep event with the leader of that moment.

// healthWait is how long a membership step waits for a healthy cluster
// before it gives up and is logged as skipped.
const healthWait = 15 * time.Second

// removeMember is the apply half of a Membership step.
func (r *runner) removeMember(ctx context.Context, i int, st Step) {
	var health error
	waitFor(ctx, healthWait, func(ctx context.Context) error {
		health = r.membershipHealth(ctx)
		return health
	})
	leaderSlot, term := r.currentLeader(ctx, 3*time.Second)
	leader := r.idOf(leaderSlot)
	ev := NemesisEvent{Step: i, Phase: PhaseStart, Fault: Membership, Leader: leader, Term: term}
	if health != nil {
		// Removing a member now could leave the rest without a quorum.
		ev.Action, ev.Error = ActionSkip, "not applied, the cluster is not healthy: "+health.Error()
		r.nem.log(ev)
		r.log.Warn("nemesis: membership change skipped", "step", i, "err", health)
		return
	}
	plan := planMembership(st, r.ids, leaderSlot, stepRand(r.cfg.Seed, i))
	if err := r.changes.begin(plan.Target); err != nil {
		ev.Action, ev.Error = ActionSkip, "not applied: "+err.Error()
		r.nem.log(ev)
		return
	}
	target := r.nodes.idOf(plan.Target)
	role := TargetFollower
	if plan.Target == leaderSlot {
		role = TargetLeader
	}
	ev.Targets, ev.Slot = []string{target}, plan.Target
	ev.Detail = fmt.Sprintf("remove %s (%s) via %s over %s; stop it and wipe its data; rejoin with a fresh id at the heal, after %v",
		target, role, r.nodes.idOf(plan.Via), plan.Proto, st.Hold)
	r.nem.log(ev)
	r.log.Info("nemesis", "step", i, "fault", Membership, "targets", ev.Targets, "leader", leader, "detail", ev.Detail)

	if !r.removeThroughAPI(ctx, i, plan, target) {
		r.changes.end()
		return
	}
	stopped, err := r.nodes.retire(plan.Target, stopTimeout)
	r.step(ctx, NemesisEvent{Step: i, Action: ActionStop, Slot: plan.Target, Targets: []string{target}, Detail: stopped})
	wipe := NemesisEvent{Step: i, Action: ActionWipe, Slot: plan.Target, Targets: []string{target}, Detail: "data dir deleted; the slot stays empty until the heal"}
	if err != nil {
		wipe.Error = err.Error()
	}
	r.step(ctx, wipe)
}

// step logs one realised part of a membership change with the leader of
// that moment.
func (r *runner) step(ctx context.Context, ev NemesisEvent) {
	leaderSlot, term := r.currentLeader(ctx, 0)
	ev.Phase, ev.Fault, ev.Leader, ev.Term = PhaseStep, Membership, r.idOf(leaderSlot), term
	r.nem.log(ev)
	r.log.Info("nemesis: membership", "step", ev.Step, "action", ev.Action, "targets", ev.Targets, "leader", ev.Leader,
		"detail", ev.Detail, "outcome", ev.Outcome, "err", ev.Error)
}

// removeThroughAPI asks for the removal and reports whether target is out
// of the configuration. An error answer is not trusted either way: the
// configuration, as every other member sees it, decides. A removal that
// did not happen is retried a few times, then given up (logged as an error;
// the node stays a member and the next membership step tries again).
func (r *runner) removeThroughAPI(ctx context.Context, i int, plan memberPlan, target string) bool {
	const attempts = 3
	via := plan.Via
	for attempt := 1; attempt <= attempts; attempt++ {
		api, err := r.memberAPI(via, plan.Proto)
		if err != nil {
			r.step(ctx, NemesisEvent{Step: i, Action: ActionRemove, Slot: plan.Target, Targets: []string{target}, Error: err.Error()})
			return false
		}
		c, cancel := context.WithTimeout(ctx, 15*time.Second)
		began := time.Now()
		resp, err := api.RemoveMember(c, target)
		cancel()
		if closer, ok := api.(interface{ Close() error }); ok {
			closer.Close()
		}
		took := time.Since(began).Round(time.Millisecond)
		ev := NemesisEvent{Step: i, Action: ActionRemove, Slot: plan.Target, Targets: []string{target}}
		if err == nil {
			ev.Detail = fmt.Sprintf("RemoveMember(%s) via %s over %s answered ok in %v; members now %s",
				target, r.nodes.idOf(via), plan.Proto, took, memberList(resp.GetMembers()))
			r.step(ctx, ev)
			return true
		}
		ev.Outcome = fmt.Sprintf("attempt %d: RemoveMember(%s) via %s over %s failed after %v: %v", attempt, target, r.nodes.idOf(via), plan.Proto, took, err)
		present, where := r.memberPresent(ctx, target, plan.Target)
		switch {
		case !present:
			ev.Detail = "resolved from the configuration: " + where
			r.step(ctx, ev)
			return true
		case attempt == attempts:
			ev.Detail = "still a member: " + where
			ev.Error = fmt.Sprintf("membership change not realised after %d attempts; %s stays a member", attempts, target)
			r.step(ctx, ev)
			return false
		}
		ev.Detail = "still a member, will retry: " + where
		r.step(ctx, ev)
		sleepCtx(ctx, 2*time.Second)
		if via == plan.Target {
			// Ask another member next time.
			for _, s := range r.ids {
				if s != plan.Target {
					via = s
					break
				}
			}
		}
	}
	return false
}

// memberAPI connects to a slot's cluster API over proto, as an LMC
// administrator on TLS.
func (r *runner) memberAPI(slot, proto string) (memberAPI, error) {
	if proto == "grpc" {
		return newGRPCAPI(r.nodes.addr(slot, grpcPort), r.dialer.DialContext, r.tls.admin)
	}
	return newRESTAPI(r.nodes.addr(slot, httpPort), r.dialer.DialContext, r.tls.admin), nil
}

// memberPresent decides whether id is still in the configuration: absent
// only when every other member says so (a removal the leader appended but
// did not commit may still be undone); it waits a while for them to agree.
func (r *runner) memberPresent(ctx context.Context, id, slot string) (bool, string) {
	var where string
	err := waitFor(ctx, 10*time.Second, func(ctx context.Context) error {
		var views []string
		for _, s := range r.ids {
			if s == slot || r.nodes.isVacant(s) {
				continue
			}
			st, err := r.apis[s].Status(ctx)
			if err != nil {
				where = fmt.Sprintf("%s: %v", r.nodes.idOf(s), err)
				return err
			}
			voters, others := votersOf(st.GetMembers())
			all := append(voters, others...)
			views = append(views, fmt.Sprintf("%s sees %v", r.nodes.idOf(s), all))
			if slices.ContainsFunc(all, func(m string) bool { return m == id || strings.HasPrefix(m, id+"(") }) {
				where = strings.Join(views, "; ")
				return fmt.Errorf("%s is a member for %s", id, r.nodes.idOf(s))
			}
		}
		where = strings.Join(views, "; ")
		return nil
	})
	return err != nil, where
}

// membershipHealth is the precondition of a change: every slot holds a
// running, unpaused process that serves linearizable reads and sees exactly
// the expected voters.
func (r *runner) membershipHealth(ctx context.Context) error {
	expected := r.nodes.members()
	if len(expected) != len(r.ids) {
		return fmt.Errorf("only %d of %d slots hold a member", len(expected), len(r.ids))
	}
	views := map[string]memberView{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, slot := range r.ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := r.nodes.idOf(slot)
			v := memberView{}
			if err := r.nodes.healthy(slot); err != nil {
				v.Err = err
			} else if st, err := r.apis[slot].Status(ctx); err != nil {
				v.Err = err
			} else {
				v.Voters, v.Others = votersOf(st.GetMembers())
				v.Ready = r.apis[slot].Ready(ctx) == nil
			}
			mu.Lock()
			views[id] = v
			mu.Unlock()
		}()
	}
	wg.Wait()
	return changeAllowed(expected, views)
}

// rejoinVacant gives every vacant slot its next process and waits until
// it is a voter; it returns what it did, for the heal event.
func (r *runner) rejoinVacant(ctx context.Context, step int) []string {
	var did []string
	for _, slot := range r.ids {
		if r.nodes.isVacant(slot) {
			did = append(did, r.rejoin(ctx, step, slot))
		}
	}
	return did
}

func (r *runner) rejoin(ctx context.Context, step int, slot string) string {
	defer r.changes.end()
	var join []string
	for _, s := range r.ids {
		if s != slot && !r.nodes.isVacant(s) {
			join = append(join, r.nodes.addr(s, grpcPort))
		}
	}
	began := time.Now()
	id, err := r.nodes.startReplacement(slot, join, func(id string) {
		// Logged before the process exists: operations on the slot from
		// here on belong to the new process (see incarnationsOf).
		r.step(ctx, NemesisEvent{Step: step, Action: ActionStart, Slot: slot, Targets: []string{id},
			Detail: fmt.Sprintf("starting %s in %s's namespace with an empty data dir and --join %s", id, slot, strings.Join(join, ","))})
	})
	if err != nil {
		r.step(ctx, NemesisEvent{Step: step, Action: ActionStart, Slot: slot, Targets: []string{id}, Error: "start: " + err.Error()})
		return fmt.Sprintf("start %s: %v", id, err)
	}
	r.wakeClients(slot)
	want := r.nodes.members()
	sort.Strings(want)
	var last string
	err = waitFor(ctx, r.cfg.JoinTimeout, func(ctx context.Context) error {
		for _, s := range r.ids {
			st, err := r.apis[s].Status(ctx)
			if err != nil {
				return fmt.Errorf("%s: %w", r.nodes.idOf(s), err)
			}
			voters, others := votersOf(st.GetMembers())
			last = fmt.Sprintf("%s sees voters %v, others %v", r.nodes.idOf(s), voters, others)
			if !slices.Equal(voters, want) || len(others) > 0 {
				return errors.New(last)
			}
		}
		return r.apis[slot].Ready(ctx)
	})
	r.wakeClients(slot)
	ev := NemesisEvent{Step: step, Action: ActionVoter, Slot: slot, Targets: []string{id}}
	if err != nil {
		ev.Error = fmt.Sprintf("%s did not become a ready voter: %v", id, err)
		r.step(ctx, ev)
		return fmt.Sprintf("rejoin %s: %v", id, err)
	}
	ev.Detail = fmt.Sprintf("%s is a voter serving linearizable reads %v after its start; voters %v", id, time.Since(began).Round(time.Millisecond), want)
	r.step(ctx, ev)
	return "rejoined " + slot + " as " + id
}

// wakeClients makes the gRPC clients pinned to a slot dial its new process
// now rather than after their reconnect backoff (which grows to minutes).
func (r *runner) wakeClients(slot string) {
	for _, g := range r.pinnedGRPC[slot] {
		g.conn.ResetConnectBackoff()
	}
}

// healthy says whether a slot holds a running, unpaused member process.
func (s *nodeSet) healthy(slot string) error {
	n := s.get(slot)
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.vacant:
		return fmt.Errorf("%s is vacant", slot)
	case n.cmd == nil:
		return fmt.Errorf("%s is not running", n.id)
	case n.paused:
		return fmt.Errorf("%s is paused", n.id)
	}
	return nil
}

package jepsen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"

	consentv1 "github.com/lmc-consent/consentd/proto/consent/v1"
)

// The membership nemesis works on slots: a slot is a namespace with fixed
// addresses (n1..nN), and holds one process at a time. Its first process has
// the slot's name as raft id; each replacement gets a fresh one (n2 → n2b →
// n2c ...), because a removed raft id must never come back with wiped state.

// replacementID is the raft id of the gen-th replacement of slot (gen ≥ 1).
func replacementID(slot string, gen int) string {
	if gen < 1 {
		return slot
	}
	if gen < 26 {
		return slot + string(rune('a'+gen))
	}
	return fmt.Sprintf("%s-%d", slot, gen)
}

// memberPlan is what one membership step does, chosen from the step's
// random source and the cluster as found.
type memberPlan struct {
	// Target is the slot whose process is removed.
	Target string
	// Via is the slot whose API is asked to remove it.
	Via string
	// Proto is "grpc" or "rest".
	Proto string
}

// planMembership picks the slot to remove (the leader for a TargetLeader
// step, else a random follower), the node to ask and the protocol. A
// leader step with no known leader takes a random slot.
func planMembership(st Step, slots []string, leader string, rng *rand.Rand) memberPlan {
	var followers []string
	for _, s := range slots {
		if s != leader {
			followers = append(followers, s)
		}
	}
	p := memberPlan{Proto: []string{"grpc", "rest"}[rng.IntN(2)]}
	switch {
	case st.Target == TargetLeader && leader != "":
		p.Target = leader
	case len(followers) > 0:
		p.Target = followers[rng.IntN(len(followers))]
	default:
		p.Target = slots[rng.IntN(len(slots))]
	}
	// Mostly another member forwards the change to the leader; sometimes
	// the target is asked to remove itself.
	if rng.IntN(5) == 0 {
		p.Via = p.Target
	} else {
		var others []string
		for _, s := range slots {
			if s != p.Target {
				others = append(others, s)
			}
		}
		p.Via = others[rng.IntN(len(others))]
	}
	return p
}

// memberView is one node's answer to the health check before a change.
type memberView struct {
	Ready bool
	// Voters are the voter ids of its raft configuration; Others those of
	// non-voters and staging servers.
	Voters, Others []string
	Err            error
}

// changeAllowed says whether a membership change may start: every
// expected member answered, serves linearizable reads, and sees exactly
// the expected voters. With one change at a time and every other member
// healthy, removing one member never leaves the rest below a quorum.
func changeAllowed(expected []string, views map[string]memberView) error {
	want := append([]string(nil), expected...)
	sort.Strings(want)
	var errs []error
	for _, id := range expected {
		v, ok := views[id]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("%s did not answer", id))
		case v.Err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", id, v.Err))
		case !v.Ready:
			errs = append(errs, fmt.Errorf("%s is not ready", id))
		default:
			got := append([]string(nil), v.Voters...)
			sort.Strings(got)
			if !slices.Equal(got, want) || len(v.Others) > 0 {
				errs = append(errs, fmt.Errorf("%s sees voters %v and others %v, want voters %v", id, got, v.Others, want))
			}
		}
	}
	return errors.Join(errs...)
}

// changeGuard admits one membership change at a time.
type changeGuard struct {
	mu     sync.Mutex
	active string
}

// begin claims the guard for a change of slot, or says which change is
// still in progress.
func (g *changeGuard) begin(slot string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.active != "" {
		return fmt.Errorf("membership change of %s still in progress", g.active)
	}
	g.active = slot
	return nil
}

func (g *changeGuard) end() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.active = ""
}

// incarnations tells which process a slot held at a time, from the
// membership nemesis' start events: the history records the slot a client
// talked to, and a fresh process at the same address starts with an empty
// state, so per-node checks must tell the two apart.
type incarnations map[string][]incarnation

type incarnation struct {
	from int64
	id   string
}

func incarnationsOf(events []NemesisEvent) incarnations {
	in := incarnations{}
	for _, e := range events {
		if e.Action == ActionStart && e.Slot != "" && len(e.Targets) > 0 {
			in[e.Slot] = append(in[e.Slot], incarnation{from: e.Time, id: e.Targets[0]})
		}
	}
	for _, l := range in {
		sort.SliceStable(l, func(i, j int) bool { return l[i].from < l[j].from })
	}
	return in
}

// at is the raft id of the process slot held at time t (an operation's
// invocation); before any replacement it is the slot's own name.
func (in incarnations) at(slot string, t int64) string {
	id := slot
	for _, x := range in[slot] {
		if x.from > t {
			break
		}
		id = x.id
	}
	return id
}

// memberAPI is the cluster membership part of a node's API.
type memberAPI interface {
	RemoveMember(ctx context.Context, id string) (*consentv1.RemoveMemberResponse, error)
}

func (g *grpcAPI) RemoveMember(ctx context.Context, id string) (*consentv1.RemoveMemberResponse, error) {
	r, err := g.cluster.RemoveMember(ctx, &consentv1.RemoveMemberRequest{Id: id})
	return r, grpcErr(err)
}

func (r *restAPI) RemoveMember(ctx context.Context, id string) (*consentv1.RemoveMemberResponse, error) {
	out := &consentv1.RemoveMemberResponse{}
	return out, r.do(ctx, http.MethodDelete, "/v1/cluster/members/"+url.PathEscape(id), nil, out)
}

// votersOf splits a configuration into voter ids and the others.
func votersOf(ms []*consentv1.Member) (voters, others []string) {
	for _, m := range ms {
		if m.GetSuffrage() == "voter" {
			voters = append(voters, m.GetId())
		} else {
			others = append(others, m.GetId()+"("+m.GetSuffrage()+")")
		}
	}
	sort.Strings(voters)
	return voters, others
}

func memberList(ms []*consentv1.Member) string {
	v, o := votersOf(ms)
	return "[" + strings.Join(append(v, o...), " ") + "]"
}

package jepsen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"time"
)

// Config is one scenario run. Zero fields take the defaults of WithDefaults.
type Config struct {
	// Scenario names an entry of Scenarios().
	Scenario string
	// Seed drives the nemesis schedule and the workload's choices.
	Seed int64
	// Duration is how long faults are injected, before the final heal.
	Duration time.Duration // default 60s
	// Nodes is the cluster size.
	Nodes int // default 3
	// ReportDir receives history.jsonl, nemesis.jsonl, node logs, results.json
	// and history.html for this scenario (the caller adds the scenario name).
	ReportDir string
	// Binary is the consentd executable.
	Binary string
	// Octet picks the run's private subnet 10.213.Octet.0/24 and the default
	// prefix; two runs at once need different octets.
	Octet int // default 77
	// Prefix names every namespace of the run; stale ones are removed at start.
	Prefix string // default "cj<Octet>"

	// HeartbeatTimeout and ElectionTimeout are passed to every node.
	HeartbeatTimeout time.Duration // default 500ms
	ElectionTimeout  time.Duration // default 500ms
	// ClientsPerNode are pinned to one node each; half use gRPC, half REST.
	ClientsPerNode int // default 2
	// FailoverClients move to another node after any error.
	FailoverClients int // default 2
	// OpTimeout bounds one client operation.
	OpTimeout time.Duration // default 4s
	// RotateEvery is how many operations one patient receives before the
	// workload moves to a new one; it keeps each Porcupine partition small.
	RotateEvery int // default 250
	// Quiet is how long the workload keeps running after the final heal.
	Quiet time.Duration // default 10s
	// RecoveryBound is the longest accepted wait, after the final heal, for
	// a write to be acknowledged (liveness).
	RecoveryBound time.Duration // default 30s
	// CheckTimeout bounds the Porcupine search; running out is a failure.
	CheckTimeout time.Duration // default 120s
	// JoinTimeout bounds how long a node replaced by the membership nemesis
	// may take to become a voter serving linearizable reads.
	JoinTimeout time.Duration // default 90s
	// TLS runs the nodes on mutual TLS, with a CA and certificates made by
	// the binary's own `consentd certs` for the run, and every client with
	// a caller certificate; false (the default) is plain TCP.
	TLS    bool
	Logger *slog.Logger
}

// WithDefaults fills zero fields.
func (c Config) WithDefaults() Config {
	if c.Duration == 0 {
		c.Duration = 60 * time.Second
	}
	if c.Nodes == 0 {
		c.Nodes = 3
	}
	if c.Octet == 0 {
		c.Octet = 77
	}
	if c.Prefix == "" {
		c.Prefix = fmt.Sprintf("cj%d", c.Octet)
	}
	if c.HeartbeatTimeout == 0 {
		c.HeartbeatTimeout = 500 * time.Millisecond
	}
	if c.ElectionTimeout == 0 {
		c.ElectionTimeout = 500 * time.Millisecond
	}
	if c.ClientsPerNode == 0 {
		c.ClientsPerNode = 2
	}
	if c.FailoverClients == 0 {
		c.FailoverClients = 2
	}
	if c.OpTimeout == 0 {
		c.OpTimeout = 4 * time.Second
	}
	if c.RotateEvery == 0 {
		c.RotateEvery = 250
	}
	if c.Quiet == 0 {
		c.Quiet = 10 * time.Second
	}
	if c.RecoveryBound == 0 {
		c.RecoveryBound = 30 * time.Second
	}
	if c.CheckTimeout == 0 {
		c.CheckTimeout = 120 * time.Second
	}
	if c.JoinTimeout == 0 {
		c.JoinTimeout = 90 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// prefixPattern keeps namespace and interface names short and shell-safe.
var prefixPattern = regexp.MustCompile(`^[a-z][a-z0-9]{1,7}$`)

// Validate reports a missing or bad setting.
func (c Config) Validate() error {
	var errs []error
	if _, ok := LookupScenario(c.Scenario); !ok {
		errs = append(errs, fmt.Errorf("jepsen: unknown scenario %q (have %v)", c.Scenario, ScenarioNames()))
	}
	if c.Nodes < 3 || c.Nodes > 9 {
		errs = append(errs, fmt.Errorf("jepsen: nodes must be 3..9, got %d", c.Nodes))
	}
	if c.Octet < 1 || c.Octet > 254 {
		errs = append(errs, fmt.Errorf("jepsen: octet must be 1..254, got %d", c.Octet))
	}
	if !prefixPattern.MatchString(c.Prefix) {
		errs = append(errs, fmt.Errorf("jepsen: prefix %q must match %s", c.Prefix, prefixPattern))
	}
	if c.Duration < 5*time.Second {
		errs = append(errs, fmt.Errorf("jepsen: duration %v is shorter than 5s", c.Duration))
	}
	if c.ReportDir == "" {
		errs = append(errs, errors.New("jepsen: report dir is required"))
	}
	if c.Binary == "" {
		errs = append(errs, errors.New("jepsen: consentd binary is required"))
	}
	if c.ElectionTimeout < c.HeartbeatTimeout {
		errs = append(errs, errors.New("jepsen: election timeout must be at least the heartbeat timeout"))
	}
	if c.ClientsPerNode < 2 {
		errs = append(errs, errors.New("jepsen: at least two clients per node"))
	}
	if total := c.ClientsPerNode*c.Nodes + c.FailoverClients; total > 32 {
		errs = append(errs, fmt.Errorf("jepsen: %d clients is too many for one patient at a time", total))
	}
	if c.RotateEvery < 20 {
		errs = append(errs, errors.New("jepsen: rotate-every must be at least 20"))
	}
	return errors.Join(errs...)
}

// Fault is one kind of nemesis action.
type Fault string

// The nemeses. Partitions drop (never reject) packets with nftables.
const (
	PartitionLeader   Fault = "partition-leader"   // leader cut from every other node
	PartitionFollower Fault = "partition-follower" // one follower cut from every other node
	PartitionMajority Fault = "partition-majority" // random minority (usually holding the leader) cut from the majority
	PartitionBridge   Fault = "partition-bridge"   // a–b–c: a and c each reach only b; the leader is an end
	PartitionOneWay   Fault = "partition-oneway"   // packets in one direction between the leader and the others dropped
	Loss              Fault = "loss"               // numgen drop of a percentage of node-to-node packets
	PauseLeader       Fault = "pause-leader"       // SIGSTOP the leader for several election timeouts
	PauseFollower     Fault = "pause-follower"     // SIGSTOP a follower
	KillLeader        Fault = "kill-leader"        // SIGKILL the leader, restart on the same data dir
	KillFollower      Fault = "kill-follower"      // SIGKILL a follower, restart on the same data dir
	KillAll           Fault = "kill-all"           // SIGKILL every node, restart all, read at once
	// Membership removes a member through the API (Step.Target says
	// whether the leader or a follower), stops it and wipes its data for
	// the hold, then starts it with a fresh raft id and --join.
	Membership Fault = "membership"
	// NewLeaderReads aims at a new leader's first moments: one follower is
	// starved of log entries (its raft port drops packets longer than a
	// heartbeat), a probe write is acknowledged by the leader, which is
	// SIGSTOPped at once, before it tells the other follower the write
	// committed; that follower wins the election, but its first entry
	// cannot commit until the starved follower catches up, while
	// heartbeats still confirm its leadership. Linearizable reads of the
	// probe hammer the survivors all that time.
	NewLeaderReads Fault = "new-leader-reads"
	// ResumedLeaderReads aims at a deposed leader that does not know it
	// yet: the leader is SIGSTOPped and cut off, a new leader acknowledges
	// a probe write, linearizable reads of the probe are queued in the old
	// leader's sockets, and it is resumed.
	ResumedLeaderReads Fault = "resumed-leader-reads"
)

// WeightedFault is one entry of a scenario's fault mix.
type WeightedFault struct {
	Fault  Fault
	Weight int
}

// Scenario is a named fault mix and node profile.
type Scenario struct {
	Name        string
	Description string
	Faults      []WeightedFault
	// NodeArgs are extra consentd flags (the snapshot stress profile).
	NodeArgs []string
	// SnapshotStress asks for frequent snapshots: tiny thresholds, and a
	// short snapshot interval when the binary has a flag for it.
	SnapshotStress bool
	// NeedsLeaderChange: a run without a leader change is inconclusive.
	NeedsLeaderChange bool
	// InTurn schedules the faults in the order listed, round after round,
	// instead of drawing them by weight: every seed then sets every trap.
	InTurn bool
}

// Scenarios returns every scenario, a fresh copy each call. "membership"
// is in the long profile (-long), not in CIScenarios.
func Scenarios() []Scenario {
	snapshot := []string{"--snapshot-threshold", "64", "--trailing-logs", "32", "--snapshot-interval", "1s"}
	return []Scenario{
		{Name: "partition-leader-bridge", Description: "isolate the leader, bridge partitions and one-way cuts",
			Faults: []WeightedFault{{PartitionLeader, 4}, {PartitionBridge, 3}, {PartitionOneWay, 1}}, NeedsLeaderChange: true},
		{Name: "pause-leader", Description: "SIGSTOP the leader (mostly) or a follower past the election timeout",
			Faults: []WeightedFault{{PauseLeader, 4}, {PauseFollower, 1}}, NeedsLeaderChange: true},
		{Name: "kill-snapshot", Description: "SIGKILL and restart (leader, follower, all) with tiny snapshot thresholds",
			Faults:   []WeightedFault{{KillLeader, 3}, {KillFollower, 3}, {KillAll, 1}},
			NodeArgs: snapshot, SnapshotStress: true, NeedsLeaderChange: true},
		{Name: "mixed", Description: "every nemesis, snapshot stress profile",
			Faults: []WeightedFault{{PartitionLeader, 2}, {PartitionFollower, 1}, {PartitionMajority, 2}, {PartitionBridge, 2},
				{PartitionOneWay, 1}, {Loss, 1}, {PauseLeader, 2}, {PauseFollower, 1}, {KillLeader, 2}, {KillFollower, 1}, {KillAll, 1}},
			NodeArgs: snapshot, SnapshotStress: true, NeedsLeaderChange: true},
		{Name: "partition-majority", Description: "minority/majority splits",
			Faults: []WeightedFault{{PartitionMajority, 1}}, NeedsLeaderChange: true},
		{Name: "partition-follower", Description: "isolate one follower at a time",
			Faults: []WeightedFault{{PartitionFollower, 1}}},
		{Name: "partition-oneway", Description: "one-way cuts around the leader",
			Faults: []WeightedFault{{PartitionOneWay, 1}}, NeedsLeaderChange: true},
		{Name: "loss", Description: "random packet loss between nodes",
			Faults: []WeightedFault{{Loss, 1}}},
		{Name: "membership", Description: "remove a member (mostly a follower, sometimes the leader) through the API, wipe it, rejoin it with a fresh id; with kills and partitions",
			// Judged by completed membership changes (efficacy), not by
			// leader changes: a short run may remove only followers.
			Faults: []WeightedFault{{Membership, 6}, {KillFollower, 1}, {KillLeader, 1}, {PartitionLeader, 1}, {PartitionMajority, 1}}},
		{Name: "targeted-leader-change", Description: "traps for reads in a leader change: a new leader before its first entry commits, and a resumed leader that was replaced while paused",
			Faults: []WeightedFault{{NewLeaderReads, 1}, {ResumedLeaderReads, 1}}, NeedsLeaderChange: true, InTurn: true},
		{Name: "none", Description: "no faults: a baseline for the checkers"},
	}
}

// CIScenarios are the four scenarios CI runs.
func CIScenarios() []string {
	var out []string
	for _, r := range CIRuns() {
		out = append(out, r.Scenario)
	}
	return out
}

// CIRun is one scenario run of the CI profile.
type CIRun struct {
	Scenario string
	TLS      bool
}

// CIRuns are the runs CI makes: the CI scenarios, one of them over mutual
// TLS (a fault mix of partitions only, so a TLS problem is not hidden
// behind kills; "mixed" still runs those partitions on plain TCP).
func CIRuns() []CIRun {
	return []CIRun{{"partition-leader-bridge", true}, {"pause-leader", false}, {"kill-snapshot", false}, {"mixed", false}}
}

// CITLS says whether CI runs scenario over TLS.
func CITLS(scenario string) bool {
	for _, r := range CIRuns() {
		if r.Scenario == scenario {
			return r.TLS
		}
	}
	return false
}

// LookupScenario finds a scenario by name.
func LookupScenario(name string) (Scenario, bool) {
	for _, s := range Scenarios() {
		if s.Name == name {
			return s, true
		}
	}
	return Scenario{}, false
}

// ScenarioNames lists the scenario names, sorted.
func ScenarioNames() []string {
	var out []string
	for _, s := range Scenarios() {
		out = append(out, s.Name)
	}
	sort.Strings(out)
	return out
}

// BuildBinary builds consentd into dir with the go tool, from the module
// this package belongs to, and returns its path.
func BuildBinary(ctx context.Context, dir string, race bool) (string, error) {
	bin := filepath.Join(dir, "consentd")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	args = append(args, "github.com/lmc-consent/consentd/cmd/consentd")
	out, err := exec.CommandContext(ctx, "go", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build consentd: %w\n%s", err, out)
	}
	return bin, nil
}

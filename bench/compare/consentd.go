package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lmc-consent/consentd/fsm"
)

// consentdCluster is three consentd processes as they ship: plain TCP
// (--insecure), default raft timeouts and durability, access log on.
type consentdCluster struct {
	cfg    Config
	dir    string
	log    *slog.Logger
	client *http.Client
	nodes  []node
	raft   []string
	procs  []*proc
	// nonce keeps request ids of this run of the tool apart from any other.
	nonce string
}

func newConsentdCluster(cfg Config, dir string, ports *portPicker, nonce string) (*consentdCluster, error) {
	c := &consentdCluster{cfg: cfg, dir: dir, log: cfg.Logger.With("system", "consentd"),
		client: &http.Client{Timeout: 15 * time.Second}, nonce: nonce}
	for i := range 3 {
		var addrs [3]string
		for j := range addrs {
			a, err := ports.addr()
			if err != nil {
				return nil, err
			}
			addrs[j] = a
		}
		c.nodes = append(c.nodes, node{ID: fmt.Sprintf("n%d", i+1), GRPCAddr: addrs[0], HTTPAddr: addrs[1]})
		c.raft = append(c.raft, addrs[2])
	}
	return c, nil
}

func (c *consentdCluster) Name() string { return "consentd" }

func (c *consentdCluster) Start(ctx context.Context) error {
	for i, n := range c.nodes {
		args := []string{"--id", n.ID, "--data-dir", filepath.Join(c.dir, n.ID), "--raft-addr", c.raft[i],
			"--grpc-addr", n.GRPCAddr, "--http-addr", n.HTTPAddr, "--insecure"}
		if i == 0 {
			args = append(args, "--bootstrap")
		} else {
			args = append(args, "--join", c.nodes[0].GRPCAddr)
		}
		p, err := startProc("consentd "+n.ID, filepath.Join(c.dir, n.ID+".log"), c.cfg.ConsentdBin, args...)
		if err != nil {
			return err
		}
		c.procs = append(c.procs, p)
		c.log.Debug("started", "node", n.ID, "pid", p.cmd.Process.Pid, "args", strings.Join(args, " "))
		// The first node must lead before the others can join through it.
		if i == 0 {
			if err := c.waitReady(ctx, c.nodes[:1], 1); err != nil {
				return err
			}
		}
	}
	return c.waitReady(ctx, c.nodes, 3)
}

// waitReady waits until every node of nodes sees members voters and
// answers /readyz (a linearizable read can be served).
func (c *consentdCluster) waitReady(ctx context.Context, nodes []node, members int) error {
	return waitFor(ctx, 60*time.Second, "consentd ready", func() error {
		for i, n := range nodes {
			if c.procs[i].exited() {
				return fmt.Errorf("%s exited: %v\n%s", n.ID, c.procs[i].err, tailFile(filepath.Join(c.dir, n.ID+".log"), 2000))
			}
			st, err := c.status(ctx, n)
			if err != nil {
				return err
			}
			if len(st.Members) != members {
				return fmt.Errorf("%s sees %d members", n.ID, len(st.Members))
			}
			if err := httpJSON(ctx, c.client, "GET", "http://"+n.HTTPAddr+"/readyz", nil, nil); err != nil {
				return err
			}
		}
		return nil
	})
}

type consentdStatus struct {
	ID          string `json:"id"`
	State       string `json:"state"`
	LeaderID    string `json:"leaderId"`
	CommitIndex string `json:"commitIndex"`
	Members     []struct {
		ID       string `json:"id"`
		Suffrage string `json:"suffrage"`
	} `json:"members"`
}

func (c *consentdCluster) status(ctx context.Context, n node) (consentdStatus, error) {
	var st consentdStatus
	err := httpJSON(ctx, c.client, "GET", "http://"+n.HTTPAddr+"/v1/cluster/status", nil, &st)
	return st, err
}

func (c *consentdCluster) Stop() { stopAll(c.procs, c.log) }

func (c *consentdCluster) PIDs() []int {
	pids := make([]int, len(c.procs))
	for i, p := range c.procs {
		pids[i] = p.cmd.Process.Pid
	}
	return pids
}

func (c *consentdCluster) Target(ctx context.Context, follower bool) (node, error) {
	var leader string
	for _, n := range c.nodes {
		st, err := c.status(ctx, n)
		if err != nil {
			continue
		}
		if st.LeaderID != "" {
			leader = st.LeaderID
			break
		}
	}
	if leader == "" {
		return node{}, fmt.Errorf("consentd: no node knows a leader")
	}
	for _, n := range c.nodes {
		if (n.ID == leader) != follower {
			return n, nil
		}
	}
	return node{}, fmt.Errorf("consentd: leader %q is not one of ours", leader)
}

func (c *consentdCluster) Revision(ctx context.Context, n node) (uint64, error) {
	st, err := c.status(ctx, n)
	if err != nil {
		return 0, err
	}
	// The raft commit index, like etcd's revision, counts entries through
	// the log; the register's applied index trails it by up to the commit
	// interval.
	return strconv.ParseUint(st.CommitIndex, 10, 64)
}

// readPatient and writePatient are the NHS numbers of the read and write
// pools: valid Modulus 11 numbers in the 999 test range, apart from each other.
func readPatient(i int) string { return fsm.TestNHSNumber(i) }

func writePatient(cfg Config, i int) string { return fsm.TestNHSNumber(cfg.Preload + i) }

// Preload gives each patient of the read pool one decision.
func (c *consentdCluster) Preload(ctx context.Context) error {
	leader, err := c.Target(ctx, false)
	if err != nil {
		return err
	}
	err = parallel(ctx, c.cfg.Preload, 16, func(ctx context.Context, i int) error {
		body := decisionBody("dissent", fmt.Sprintf("preload-%s-%d", c.nonce, i))
		return httpJSON(ctx, c.client, "POST", "http://"+leader.HTTPAddr+"/v1/patients/"+readPatient(i)+"/decisions", body, nil)
	})
	if err != nil {
		return err
	}
	// A read of a patient with nothing recorded is cheaper (and also a 200):
	// make sure the read runs find what was written.
	for _, i := range []int{0, c.cfg.Preload - 1} {
		var got struct {
			Consents []struct {
				Kind, State, Version string
			} `json:"consents"`
		}
		if err := httpJSON(ctx, c.client, "GET", "http://"+leader.HTTPAddr+"/v1/patients/"+readPatient(i)+"/consents", nil, &got); err != nil {
			return err
		}
		if !slices.ContainsFunc(got.Consents, func(k struct{ Kind, State, Version string }) bool {
			return k.Kind == "scr" && k.State == "dissent" && k.Version == "1"
		}) {
			return fmt.Errorf("consentd: preloaded patient %s reads %+v, want scr dissent version 1", readPatient(i), got.Consents)
		}
	}
	return nil
}

// decisionBody is a complete RecordDecision body: the fields the API
// requires, effectiveFrom left to the node (now).
func decisionBody(state, requestID string) map[string]any {
	return map[string]any{"kind": "scr", "state": state, "channel": "in_person",
		"decisionMaker": map[string]string{"type": "patient"}, "requestId": requestID}
}

// scrStates are the states writes cycle through, so consecutive decisions
// for a patient change its state (over gRPC and REST alike).
var scrStates = []string{"consent_core", "dissent"}

func (c *consentdCluster) Workload(op, protocol string) (workload, error) {
	switch protocol {
	case "grpc":
		var msgs []map[string]any
		call := "consent.v1.ConsentService.GetConsents"
		switch op {
		case "write":
			call = "consent.v1.ConsentService.RecordDecision"
			// ghz sends message j of the array for call j (mod its length):
			// every patient in turn, then all again with the other state.
			n := c.cfg.WritePool
			for j := range n * len(scrStates) {
				m := decisionBody(scrStates[j/n], "{{newUUID}}")
				m["nhsNumber"] = writePatient(c.cfg, j%n)
				msgs = append(msgs, m)
			}
		case "read", "stale":
			for i := range c.cfg.Preload {
				m := map[string]any{"nhsNumber": readPatient(i)}
				if op == "stale" {
					m["consistency"] = "stale"
				}
				msgs = append(msgs, m)
			}
		default:
			return workload{}, fmt.Errorf("consentd: unknown op %q", op)
		}
		data, err := json.Marshal(msgs)
		if err != nil {
			return workload{}, err
		}
		// No .proto: ghz asks the server (consentd registers reflection);
		// ghz 0.93's own .proto parser predates proto3 "optional", which
		// RecordDecisionRequest uses.
		return workload{Call: call, Data: string(data)}, nil
	case "rest":
		lua, err := consentdLua(op, c.nonce, c.pool(op))
		return workload{Lua: lua}, err
	}
	return workload{}, fmt.Errorf("consentd: unknown protocol %q", protocol)
}

func (c *consentdCluster) pool(op string) []string {
	if op == "write" {
		p := make([]string, c.cfg.WritePool)
		for i := range p {
			p[i] = writePatient(c.cfg, i)
		}
		return p
	}
	p := make([]string, c.cfg.Preload)
	for i := range p {
		p[i] = readPatient(i)
	}
	return p
}

// logs are the nodes' own log files, copied into the results.
func (c *consentdCluster) logs() []string {
	var out []string
	for _, n := range c.nodes {
		if p := filepath.Join(c.dir, n.ID+".log"); fileExists(p) {
			out = append(out, p)
		}
	}
	return out
}

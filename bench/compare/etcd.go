package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// etcdCluster is three etcd processes with their defaults (fsync on,
// default heartbeat and election timeouts), plain HTTP on loopback. Its
// REST/JSON API is the grpc-gateway etcd serves on the client port.
type etcdCluster struct {
	cfg    Config
	dir    string
	log    *slog.Logger
	client *http.Client
	nodes  []node // GRPCAddr == HTTPAddr: etcd serves both on the client port
	peers  []string
	procs  []*proc
	nonce  string
}

func newEtcdCluster(cfg Config, dir string, ports *portPicker, nonce string) (*etcdCluster, error) {
	c := &etcdCluster{cfg: cfg, dir: dir, log: cfg.Logger.With("system", "etcd"),
		client: &http.Client{Timeout: 15 * time.Second}, nonce: nonce}
	for i := range 3 {
		client, err := ports.addr()
		if err != nil {
			return nil, err
		}
		peer, err := ports.addr()
		if err != nil {
			return nil, err
		}
		c.nodes = append(c.nodes, node{ID: fmt.Sprintf("e%d", i+1), GRPCAddr: client, HTTPAddr: client})
		c.peers = append(c.peers, peer)
	}
	return c, nil
}

func (c *etcdCluster) Name() string { return "etcd" }

func (c *etcdCluster) Start(ctx context.Context) error {
	var initial []string
	for i, n := range c.nodes {
		initial = append(initial, n.ID+"=http://"+c.peers[i])
	}
	for i, n := range c.nodes {
		args := []string{"--name", n.ID, "--data-dir", filepath.Join(c.dir, n.ID),
			"--listen-client-urls", "http://" + n.GRPCAddr, "--advertise-client-urls", "http://" + n.GRPCAddr,
			"--listen-peer-urls", "http://" + c.peers[i], "--initial-advertise-peer-urls", "http://" + c.peers[i],
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "bench-" + c.nonce, "--logger", "zap", "--log-outputs", "stderr"}
		p, err := startProc("etcd "+n.ID, filepath.Join(c.dir, n.ID+".log"), c.cfg.EtcdBin, args...)
		if err != nil {
			return err
		}
		c.procs = append(c.procs, p)
		c.log.Debug("started", "node", n.ID, "pid", p.cmd.Process.Pid, "args", strings.Join(args, " "))
	}
	return waitFor(ctx, 60*time.Second, "etcd healthy", func() error {
		for i, n := range c.nodes {
			if c.procs[i].exited() {
				return fmt.Errorf("%s exited: %v\n%s", n.ID, c.procs[i].err, tailFile(filepath.Join(c.dir, n.ID+".log"), 2000))
			}
			var h struct {
				Health string `json:"health"`
			}
			if err := httpJSON(ctx, c.client, "GET", "http://"+n.HTTPAddr+"/health", nil, &h); err != nil {
				return err
			}
			if h.Health != "true" {
				return fmt.Errorf("%s health %q", n.ID, h.Health)
			}
		}
		return nil
	})
}

func (c *etcdCluster) Stop() { stopAll(c.procs, c.log) }

func (c *etcdCluster) PIDs() []int {
	pids := make([]int, len(c.procs))
	for i, p := range c.procs {
		pids[i] = p.cmd.Process.Pid
	}
	return pids
}

// etcdStatus is the part of Maintenance.Status the tool needs; 64-bit
// numbers are JSON strings, as the gateway writes them.
type etcdStatus struct {
	Header struct {
		MemberID string `json:"member_id"`
		Revision string `json:"revision"`
	} `json:"header"`
	Leader string `json:"leader"`
}

func (c *etcdCluster) status(ctx context.Context, n node) (etcdStatus, error) {
	var st etcdStatus
	err := httpJSON(ctx, c.client, "POST", "http://"+n.HTTPAddr+"/v3/maintenance/status", map[string]any{}, &st)
	return st, err
}

func (c *etcdCluster) Target(ctx context.Context, follower bool) (node, error) {
	var candidates []node
	for _, n := range c.nodes {
		st, err := c.status(ctx, n)
		if err != nil {
			continue
		}
		if st.Leader == "" || st.Leader == "0" {
			return node{}, fmt.Errorf("etcd: %s knows no leader", n.ID)
		}
		if (st.Header.MemberID == st.Leader) != follower {
			candidates = append(candidates, n)
		}
	}
	if len(candidates) == 0 {
		return node{}, fmt.Errorf("etcd: no node answered as the %s", map[bool]string{false: "leader", true: "follower"}[follower])
	}
	return candidates[0], nil
}

func (c *etcdCluster) Revision(ctx context.Context, n node) (uint64, error) {
	st, err := c.status(ctx, n)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(st.Header.Revision, 10, 64)
}

// WrittenKeys counts the keys the write runs put (prefix bench/w/).
func (c *etcdCluster) WrittenKeys(ctx context.Context, n node) (uint64, error) {
	var got struct {
		Count string `json:"count"`
	}
	body := map[string]any{"key": b64("bench/w/"), "range_end": b64("bench/w0"), "count_only": true}
	if err := httpJSON(ctx, c.client, "POST", "http://"+n.HTTPAddr+"/v3/kv/range", body, &got); err != nil {
		return 0, err
	}
	if got.Count == "" {
		return 0, nil // the gateway leaves out a zero
	}
	return strconv.ParseUint(got.Count, 10, 64)
}

// etcdReadKey is key i of the read pool.
func etcdReadKey(i int) string { return fmt.Sprintf("bench/r/%06d", i) }

// etcdValue is the value of every etcd write: cfg.ValueSize ASCII bytes.
func etcdValue(size int) string { return strings.Repeat("0123456789", size/10+1)[:size] }

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// Preload puts every key of the read pool, through the gateway.
func (c *etcdCluster) Preload(ctx context.Context) error {
	leader, err := c.Target(ctx, false)
	if err != nil {
		return err
	}
	value := b64(etcdValue(c.cfg.ValueSize))
	err = parallel(ctx, c.cfg.Preload, 16, func(ctx context.Context, i int) error {
		body := map[string]string{"key": b64(etcdReadKey(i)), "value": value}
		return httpJSON(ctx, c.client, "POST", "http://"+leader.HTTPAddr+"/v3/kv/put", body, nil)
	})
	if err != nil {
		return err
	}
	// A Range of a missing key is cheaper (and also a 200): make sure the
	// read runs find what was written.
	for _, i := range []int{0, c.cfg.Preload - 1} {
		var got struct {
			Kvs []struct {
				Value string `json:"value"`
			} `json:"kvs"`
		}
		if err := httpJSON(ctx, c.client, "POST", "http://"+leader.HTTPAddr+"/v3/kv/range", map[string]string{"key": b64(etcdReadKey(i))}, &got); err != nil {
			return err
		}
		if len(got.Kvs) != 1 || got.Kvs[0].Value != value {
			return fmt.Errorf("etcd: preloaded key %s reads %+v, want its %d-byte value", etcdReadKey(i), got.Kvs, c.cfg.ValueSize)
		}
	}
	return nil
}

func (c *etcdCluster) Workload(op, protocol string) (workload, error) {
	proto := absPath(c.cfg.EtcdProto)
	switch protocol {
	case "grpc":
		w := workload{Call: "etcdserverpb.KV.Range", Proto: proto, ImportPaths: []string{filepath.Dir(proto)}}
		// Keys and values are strings in our subset (same wire type as
		// etcd's bytes), so ghz's {{newUUID}} can be used as is.
		switch op {
		case "write":
			w.Call = "etcdserverpb.KV.Put"
			data, err := json.Marshal(map[string]string{"key": "bench/w/{{newUUID}}", "value": etcdValue(c.cfg.ValueSize)})
			if err != nil {
				return workload{}, err
			}
			w.Data = string(data)
		case "read", "stale":
			var msgs []map[string]any
			for i := range c.cfg.Preload {
				m := map[string]any{"key": etcdReadKey(i)}
				if op == "stale" {
					m["serializable"] = true
				}
				msgs = append(msgs, m)
			}
			data, err := json.Marshal(msgs)
			if err != nil {
				return workload{}, err
			}
			w.Data = string(data)
		default:
			return workload{}, fmt.Errorf("etcd: unknown op %q", op)
		}
		return w, nil
	case "rest":
		var pool []string
		if op != "write" {
			for i := range c.cfg.Preload {
				pool = append(pool, etcdReadKey(i))
			}
		}
		lua, err := etcdLua(op, c.nonce, etcdValue(c.cfg.ValueSize), pool)
		return workload{Lua: lua}, err
	}
	return workload{}, fmt.Errorf("etcd: unknown protocol %q", protocol)
}

func (c *etcdCluster) logs() []string {
	var out []string
	for _, n := range c.nodes {
		if p := filepath.Join(c.dir, n.ID+".log"); fileExists(p) {
			out = append(out, p)
		}
	}
	return out
}

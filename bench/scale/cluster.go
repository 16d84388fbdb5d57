package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lmc-consent/consentd/bench/internal/procstat"
)

// node is one consentd process of the benchmark cluster, on 127.0.0.1.
type node struct {
	id               string
	dir              string // data dir
	raft, grpc, http string // addresses
	extra            []string
	cmd              *exec.Cmd
	logFile          *os.File
	exited           chan struct{}
	bin              string
	joinThrough      string // gRPC address to join through; "" bootstraps
	memLimit         int64  // bytes; 0 is no cap
	starts           int    // names each start's cgroup
}

// newCluster lays out n nodes with ports from base (raft base+i, gRPC
// base+100+i, REST base+200+i).
func newCluster(bin, dir string, n, base int, extra []string) []*node {
	var nodes []*node
	for i := range n {
		id := "n" + strconv.Itoa(i+1)
		nd := &node{id: id, dir: filepath.Join(dir, id), bin: bin, extra: extra,
			raft: addr(base + i), grpc: addr(base + 100 + i), http: addr(base + 200 + i)}
		nodes = append(nodes, nd)
	}
	for _, nd := range nodes[1:] {
		nd.joinThrough = nodes[0].grpc
	}
	return nodes
}

func addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// start runs the node's process; its output goes to DIR.log.
func (nd *node) start() error {
	if err := os.MkdirAll(nd.dir, 0o700); err != nil {
		return err
	}
	args := []string{"--id", nd.id, "--data-dir", nd.dir, "--insecure", "--log-level", "warn",
		"--raft-addr", nd.raft, "--grpc-addr", nd.grpc, "--http-addr", nd.http}
	// A node that has state rejoins by itself; bootstrap and join only
	// matter the first time, and are harmless on a restart.
	if nd.joinThrough == "" {
		args = append(args, "--bootstrap")
	} else {
		args = append(args, "--join", nd.joinThrough)
	}
	args = append(args, nd.extra...)
	f, err := os.OpenFile(nd.dir+".log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	nd.logFile = f
	var mc *memoryCap
	if nd.memLimit > 0 {
		// The node starts inside its cgroup, as in a container, so that it
		// finds the limit and sets Go's soft limit from it (see
		// internal/memlimit): a shell joins the cgroup, then execs consentd.
		nd.starts++
		mc, err = newMemoryCap(fmt.Sprintf("consentd-scale-%s-%d-%d", nd.id, os.Getpid(), nd.starts), nd.memLimit)
		if err != nil {
			f.Close()
			return err
		}
		nd.cmd = exec.Command("/bin/sh", append([]string{"-c", `echo $$ > "$0" && exec "$@"`, mc.procsFile(), nd.bin}, args...)...)
	} else {
		nd.cmd = exec.Command(nd.bin, args...)
	}
	nd.cmd.Stdout, nd.cmd.Stderr = f, f
	if err := nd.cmd.Start(); err != nil {
		f.Close()
		mc.remove()
		return err
	}
	nd.exited = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}, f *os.File, mc *memoryCap) {
		cmd.Wait()
		f.Close()
		mc.remove()
		close(done)
	}(nd.cmd, nd.exited, f, mc)
	return nil
}

// stop ends the process with SIGTERM (a clean shutdown), or SIGKILL after
// the timeout.
func (nd *node) stop(timeout time.Duration) error {
	if nd.cmd == nil {
		return nil
	}
	nd.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-nd.exited:
	case <-time.After(timeout):
		nd.cmd.Process.Kill()
		<-nd.exited
		nd.cmd = nil
		return fmt.Errorf("%s did not stop within %v; killed", nd.id, timeout)
	}
	nd.cmd = nil
	return nil
}

func (nd *node) running() bool {
	if nd.cmd == nil {
		return false
	}
	select {
	case <-nd.exited:
		return false
	default:
		return true
	}
}

// ready reports whether the node serves a linearizable read now.
func (nd *node) ready(ctx context.Context, hc *http.Client) bool {
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+nd.http+"/readyz", nil)
	resp, err := hc.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

// waitReady polls until every given node is ready, and returns how long it
// took; a node whose process exits fails at once.
func waitReady(ctx context.Context, hc *http.Client, timeout time.Duration, nodes ...*node) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		all := true
		for _, nd := range nodes {
			if !nd.running() {
				return 0, fmt.Errorf("%s exited (see %s.log)", nd.id, nd.dir)
			}
			if !nd.ready(ctx, hc) {
				all = false
			}
		}
		if all {
			return time.Since(start), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("not ready within %v", timeout)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// nodeStatus is the part of GET /v1/cluster/status the benchmark reads.
type nodeStatus struct {
	ID           string `json:"id"`
	State        string `json:"state"`
	LeaderID     string `json:"leaderId"`
	CommitIndex  string `json:"commitIndex"`
	AppliedIndex string `json:"appliedIndex"`
}

func (nd *node) status(ctx context.Context, hc *http.Client) (nodeStatus, error) {
	var st nodeStatus
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+nd.http+"/v1/cluster/status", nil)
	resp, err := hc.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return st, fmt.Errorf("%s status: HTTP %d", nd.id, resp.StatusCode)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// raftStats are the consentd_raft gauges the benchmark reads.
type raftStats struct {
	LastSnapshot          uint64 // index of the newest snapshot
	LogBytesSinceSnapshot uint64 // what the byte-based snapshot triggers go by
	SnapshotsBeingWritten uint64 // captured, still being written
}

// raftStats reads the node's consentd_raft gauges from its metrics.
func (nd *node) raftStats(ctx context.Context, hc *http.Client) (raftStats, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+nd.http+"/metrics", nil)
	resp, err := hc.Do(req)
	if err != nil {
		return raftStats{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return raftStats{}, fmt.Errorf("%s metrics: HTTP %d", nd.id, resp.StatusCode)
	}
	return parseRaftStats(resp.Body)
}

// parseRaftStats reads the gauges of raftStats from a Prometheus text
// exposition; each must be there.
func parseRaftStats(r io.Reader) (raftStats, error) {
	var st raftStats
	want := map[string]*uint64{
		`consentd_raft{stat="last_snapshot_index"} `:      &st.LastSnapshot,
		`consentd_raft{stat="log_bytes_since_snapshot"} `: &st.LogBytesSinceSnapshot,
		`consentd_raft{stat="snapshots_being_written"} `:  &st.SnapshotsBeingWritten,
	}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		for name, dst := range want {
			v, ok := strings.CutPrefix(sc.Text(), name)
			if !ok {
				continue
			}
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return st, fmt.Errorf("%s%q: %w", name, v, err)
			}
			*dst = uint64(f)
			delete(want, name)
		}
	}
	if err := sc.Err(); err != nil {
		return st, err
	}
	for name := range want {
		return st, fmt.Errorf("no %sin the metrics", name)
	}
	return st, nil
}

func (st nodeStatus) applied() uint64 { v, _ := strconv.ParseUint(st.AppliedIndex, 10, 64); return v }
func (st nodeStatus) commit() uint64  { v, _ := strconv.ParseUint(st.CommitIndex, 10, 64); return v }

// leader finds the node that reports itself leader.
func leader(ctx context.Context, hc *http.Client, nodes []*node) (*node, error) {
	for _, nd := range nodes {
		if st, err := nd.status(ctx, hc); err == nil && st.State == "leader" {
			return nd, nil
		}
	}
	return nil, errors.New("no leader")
}

func (nd *node) memory() (procstat.Memory, error) {
	if !nd.running() {
		return procstat.Memory{}, fmt.Errorf("%s not running", nd.id)
	}
	return procstat.ReadMemory(nd.cmd.Process.Pid)
}

// cpuTicks is the process's user+system CPU time so far, in clock ticks.
func (nd *node) cpuTicks() uint64 {
	if !nd.running() {
		return 0
	}
	t, _ := procstat.CPUTicks(nd.cmd.Process.Pid)
	return t
}

// disk is a node's on-disk size by part.
type disk struct {
	Raft, Register, AccessLog, Other, Total int64
}

// diskUsage sums allocated blocks (not apparent sizes: bbolt files are
// sparse while they grow) under the node's data dir.
func (nd *node) diskUsage() (disk, error) {
	var d disk
	err := filepath.WalkDir(nd.dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		size := info.Size()
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			size = st.Blocks * 512
		}
		rel, _ := filepath.Rel(nd.dir, path)
		switch top := strings.SplitN(rel, string(filepath.Separator), 2)[0]; {
		case top == "raft":
			d.Raft += size
		case top == "access-log":
			d.AccessLog += size
		case strings.HasSuffix(rel, ".db") && !strings.Contains(rel, string(filepath.Separator)):
			d.Register += size
		default:
			d.Other += size
		}
		d.Total += size
		return nil
	})
	return d, err
}

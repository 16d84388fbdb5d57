//go:build linux

package jepsen

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Ports every node listens on, on its namespace address.
const (
	raftPort = 7081
	grpcPort = 9081
	httpPort = 8081
)

// nodeProc is one consentd process and its data dir; restarts reuse both.
type nodeProc struct {
	id      string
	dataDir string
	logPath string

	mu       sync.Mutex
	cmd      *exec.Cmd
	logFile  *os.File
	exited   chan struct{}
	expected bool // the next exit was asked for
	paused   bool
	started  bool
}

// nodeSet starts, pauses, kills and restarts the cluster's processes.
type nodeSet struct {
	topo     *Topology
	bin      string
	nodes    []*nodeProc
	baseArgs []string
	rec      func() int64

	mu    sync.Mutex
	exits []string
}

func newNodeSet(topo *Topology, bin string, ids []string, dataRoot, reportDir string, cfg Config, extra []string, clock func() int64) *nodeSet {
	s := &nodeSet{topo: topo, bin: bin, rec: clock,
		baseArgs: append([]string{"--insecure", "--log-level", "info",
			"--heartbeat-timeout", cfg.HeartbeatTimeout.String(), "--election-timeout", cfg.ElectionTimeout.String()}, extra...)}
	for _, id := range ids {
		s.nodes = append(s.nodes, &nodeProc{id: id, dataDir: filepath.Join(dataRoot, id), logPath: filepath.Join(reportDir, id+".log")})
	}
	return s
}

func (s *nodeSet) get(id string) *nodeProc {
	for _, n := range s.nodes {
		if n.id == id {
			return n
		}
	}
	return nil
}

func (s *nodeSet) addr(id string, port int) string { return fmt.Sprintf("%s:%d", s.topo.IP(id), port) }

// start launches a node. The first start of the first node bootstraps; the
// first start of the others joins through the nodes before them; a restart
// needs neither.
func (s *nodeSet) start(id string) error {
	n := s.get(id)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		return fmt.Errorf("%s is already running", id)
	}
	args := append([]string{"--id", id, "--data-dir", n.dataDir,
		"--raft-addr", s.addr(id, raftPort), "--grpc-addr", s.addr(id, grpcPort), "--http-addr", s.addr(id, httpPort)}, s.baseArgs...)
	if !n.started {
		if id == s.nodes[0].id {
			args = append(args, "--bootstrap")
		} else {
			var join []string
			for _, o := range s.nodes {
				if o.id == id {
					break
				}
				join = append(join, s.addr(o.id, grpcPort))
			}
			args = append(args, "--join", strings.Join(join, ","))
		}
	}
	f, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "=== jepsen: starting %s at %s: %s\n", id, time.Now().UTC().Format(time.RFC3339Nano), strings.Join(args, " "))
	cmd := s.topo.NodeCommand(id, s.bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", id, err)
	}
	n.cmd, n.logFile, n.exited, n.expected, n.paused, n.started = cmd, f, make(chan struct{}), false, false, true
	go s.reap(n, cmd, f, n.exited)
	return nil
}

func (s *nodeSet) reap(n *nodeProc, cmd *exec.Cmd, f *os.File, exited chan struct{}) {
	err := cmd.Wait()
	n.mu.Lock()
	expected := n.expected
	if n.cmd == cmd {
		n.cmd = nil
	}
	n.mu.Unlock()
	fmt.Fprintf(f, "=== jepsen: %s exited at %s: %v\n", n.id, time.Now().UTC().Format(time.RFC3339Nano), err)
	f.Close()
	if !expected {
		s.mu.Lock()
		s.exits = append(s.exits, fmt.Sprintf("%s at %s: %v", n.id, fmtNs(s.rec()), err))
		s.mu.Unlock()
	}
	close(exited)
}

func (s *nodeSet) signal(id string, sig syscall.Signal) error {
	n := s.get(id)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return fmt.Errorf("%s is not running", id)
	}
	switch sig {
	case syscall.SIGSTOP:
		n.paused = true
	case syscall.SIGCONT:
		n.paused = false
	}
	return n.cmd.Process.Signal(sig)
}

// kill sends SIGKILL and waits for the process to be gone.
func (s *nodeSet) kill(id string) error {
	n := s.get(id)
	n.mu.Lock()
	if n.cmd == nil {
		n.mu.Unlock()
		return fmt.Errorf("%s is not running", id)
	}
	n.expected = true
	err := n.cmd.Process.Signal(syscall.SIGKILL)
	exited := n.exited
	n.mu.Unlock()
	if err != nil {
		return err
	}
	select {
	case <-exited:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s did not exit within 10s of SIGKILL", id)
	}
}

// running reports whether a node's process is alive (paused counts).
func (s *nodeSet) running(id string) bool {
	n := s.get(id)
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

// healAll resumes paused nodes and restarts killed ones.
func (s *nodeSet) healAll() []string {
	var did []string
	for _, n := range s.nodes {
		n.mu.Lock()
		paused, alive := n.paused, n.cmd != nil
		n.mu.Unlock()
		switch {
		case alive && paused:
			if err := s.signal(n.id, syscall.SIGCONT); err == nil {
				did = append(did, "resumed "+n.id)
			}
		case !alive:
			if err := s.start(n.id); err == nil {
				did = append(did, "restarted "+n.id)
			} else {
				did = append(did, fmt.Sprintf("restart %s: %v", n.id, err))
			}
		}
	}
	return did
}

// stopAll sends SIGTERM (a graceful stop) and waits; a node that does not
// stop in time is killed and reported.
func (s *nodeSet) stopAll(timeout time.Duration) []string {
	var notes []string
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, n := range s.nodes {
		n.mu.Lock()
		cmd, exited := n.cmd, n.exited
		if cmd != nil {
			n.expected = true
			cmd.Process.Signal(syscall.SIGCONT)
			cmd.Process.Signal(syscall.SIGTERM)
		}
		n.mu.Unlock()
		if cmd == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-exited:
				if st := cmd.ProcessState; st != nil && !st.Success() {
					mu.Lock()
					notes = append(notes, fmt.Sprintf("%s exited with %v after SIGTERM", n.id, st))
					mu.Unlock()
				}
			case <-time.After(timeout):
				// SIGQUIT makes the Go runtime write every goroutine's stack
				// to the node's log: the evidence of where shutdown hangs.
				cmd.Process.Signal(syscall.SIGQUIT)
				select {
				case <-exited:
				case <-time.After(5 * time.Second):
					cmd.Process.Signal(syscall.SIGKILL)
					<-exited
				}
				mu.Lock()
				notes = append(notes, fmt.Sprintf("%s did not stop within %v of SIGTERM (goroutine dump from SIGQUIT in %s.log)", n.id, timeout, n.id))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return notes
}

// killAllNow is the teardown path: SIGKILL whatever still runs.
func (s *nodeSet) killAllNow() error {
	var errs []error
	for _, n := range s.nodes {
		if s.running(n.id) {
			errs = append(errs, s.kill(n.id))
		}
	}
	return errors.Join(errs...)
}

func (s *nodeSet) unexpectedExits() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.exits...)
}

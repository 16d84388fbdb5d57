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

// nodeProc is one slot (a namespace and its addresses) and the consentd
// process in it: restarts reuse the raft id and data dir; a replacement by
// the membership nemesis gets a fresh raft id, data dir and log.
type nodeProc struct {
	slot string

	mu       sync.Mutex
	id       string // current raft id
	gen      int    // replacements so far
	dataDir  string
	logPath  string
	cmd      *exec.Cmd
	logFile  *os.File
	exited   chan struct{}
	expected bool // the next exit was asked for
	paused   bool
	started  bool
	// vacant: removed from the cluster, stopped and wiped; only a
	// replacement may start here.
	vacant bool
}

// nodeSet starts, pauses, kills, restarts and replaces the cluster's
// processes. Its methods take slot names.
type nodeSet struct {
	topo      *Topology
	bin       string
	nodes     []*nodeProc
	baseArgs  []string
	rec       func() int64
	dataRoot  string
	reportDir string
	// certs holds the run's certificates; "" runs the nodes on plain TCP.
	certs certDir

	mu      sync.Mutex
	exits   []string
	retired []string
}

func newNodeSet(topo *Topology, bin string, ids []string, dataRoot, reportDir string, certs certDir, cfg Config, extra []string, clock func() int64) *nodeSet {
	s := &nodeSet{topo: topo, bin: bin, rec: clock, dataRoot: dataRoot, reportDir: reportDir, certs: certs,
		baseArgs: append([]string{"--log-level", "info",
			"--heartbeat-timeout", cfg.HeartbeatTimeout.String(), "--election-timeout", cfg.ElectionTimeout.String()}, extra...)}
	for _, id := range ids {
		s.nodes = append(s.nodes, &nodeProc{slot: id, id: id, dataDir: filepath.Join(dataRoot, id), logPath: filepath.Join(reportDir, id+".log")})
	}
	return s
}

func (s *nodeSet) get(slot string) *nodeProc {
	for _, n := range s.nodes {
		if n.slot == slot {
			return n
		}
	}
	return nil
}

// idOf is the raft id of the process a slot holds now (or will hold).
func (s *nodeSet) idOf(slot string) string {
	n := s.get(slot)
	if n == nil {
		return slot
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.id
}

// slotOf finds the slot of a current raft id; "" if none holds it.
func (s *nodeSet) slotOf(id string) string {
	for _, n := range s.nodes {
		n.mu.Lock()
		cur := n.id
		n.mu.Unlock()
		if cur == id {
			return n.slot
		}
	}
	return ""
}

// members are the current raft ids of the slots that are not vacant, in
// slot order.
func (s *nodeSet) members() []string {
	var out []string
	for _, n := range s.nodes {
		n.mu.Lock()
		if !n.vacant {
			out = append(out, n.id)
		}
		n.mu.Unlock()
	}
	return out
}

func (s *nodeSet) isVacant(slot string) bool {
	n := s.get(slot)
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.vacant
}

func (s *nodeSet) retiredIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.retired...)
}

func (s *nodeSet) addr(id string, port int) string { return fmt.Sprintf("%s:%d", s.topo.IP(id), port) }

// start launches a slot's process. The first start of the first node
// bootstraps; the first start of the others joins through the nodes before
// them; a restart needs neither.
func (s *nodeSet) start(slot string) error {
	n := s.get(slot)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.vacant {
		return fmt.Errorf("%s is vacant: it was removed from the cluster", slot)
	}
	var join []string
	if !n.started && slot != s.nodes[0].slot {
		for _, o := range s.nodes {
			if o.slot == slot {
				break
			}
			join = append(join, s.addr(o.slot, grpcPort))
		}
	}
	return s.startLocked(n, !n.started && slot == s.nodes[0].slot, join)
}

// startReplacement starts a vacant slot's next process: a fresh raft id,
// data dir and log, joining through join (gRPC addresses of members). It
// returns the new id; onStart runs just before the process starts.
func (s *nodeSet) startReplacement(slot string, join []string, onStart func(id string)) (string, error) {
	n := s.get(slot)
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.vacant || n.cmd != nil {
		return "", fmt.Errorf("%s is not vacant", slot)
	}
	n.gen++
	n.id = replacementID(slot, n.gen)
	n.dataDir = filepath.Join(s.dataRoot, n.id)
	n.logPath = filepath.Join(s.reportDir, n.id+".log")
	n.started, n.vacant = false, false
	if err := os.RemoveAll(n.dataDir); err != nil {
		return n.id, err
	}
	onStart(n.id)
	if err := s.startLocked(n, false, join); err != nil {
		// Nothing ran: the slot stays vacant for a later attempt.
		n.vacant = true
		return n.id, err
	}
	return n.id, nil
}

func (s *nodeSet) startLocked(n *nodeProc, bootstrap bool, join []string) error {
	if n.cmd != nil {
		return fmt.Errorf("%s is already running", n.id)
	}
	args := append([]string{"--id", n.id, "--data-dir", n.dataDir,
		"--raft-addr", s.addr(n.slot, raftPort), "--grpc-addr", s.addr(n.slot, grpcPort), "--http-addr", s.addr(n.slot, httpPort)}, s.baseArgs...)
	if s.certs == "" {
		args = append(args, "--insecure")
	} else {
		cert, _ := s.certs.node(n.id)
		if _, err := os.Stat(cert); err != nil {
			return fmt.Errorf("no certificate for %s (the run issued them up front): %w", n.id, err)
		}
		args = append(args, s.certs.nodeArgs(n.id)...)
	}
	if bootstrap {
		args = append(args, "--bootstrap")
	} else if len(join) > 0 {
		args = append(args, "--join", strings.Join(join, ","))
	}
	f, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "=== jepsen: starting %s at %s: %s\n", n.id, time.Now().UTC().Format(time.RFC3339Nano), strings.Join(args, " "))
	cmd := s.topo.NodeCommand(n.slot, s.bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", n.id, err)
	}
	n.cmd, n.logFile, n.exited, n.expected, n.paused, n.started = cmd, f, make(chan struct{}), false, false, true
	go s.reap(n, n.id, cmd, f, n.exited)
	return nil
}

// retire stops a removed member's process with SIGTERM (SIGKILL after
// timeout, with a goroutine dump first), wipes its data dir and leaves the
// slot vacant. A slow or unclean stop is reported as a process problem.
func (s *nodeSet) retire(slot string, timeout time.Duration) (stopped string, err error) {
	n := s.get(slot)
	n.mu.Lock()
	n.vacant = true
	dataDir := n.dataDir
	id, cmd, exited := n.terminateLocked()
	n.mu.Unlock()
	s.mu.Lock()
	s.retired = append(s.retired, id)
	s.mu.Unlock()
	began := time.Now()
	switch {
	case cmd == nil:
		stopped = id + " was not running"
	default:
		if !awaitStop(cmd, exited, timeout) {
			stopped = fmt.Sprintf("%s did not stop within %v of SIGTERM; killed", id, timeout)
			s.note(fmt.Sprintf("%s did not stop within %v of SIGTERM after its removal (goroutine dump from SIGQUIT in %s.log)", id, timeout, id))
			break
		}
		stopped = fmt.Sprintf("%s stopped on SIGTERM in %v", id, time.Since(began).Round(time.Millisecond))
		if st := cmd.ProcessState; st != nil && !st.Success() {
			stopped += fmt.Sprintf(" (%v)", st)
			s.note(fmt.Sprintf("%s exited with %v after SIGTERM (removed from the cluster)", id, st))
		}
	}
	return stopped, os.RemoveAll(dataDir)
}

func (s *nodeSet) note(msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.exits = append(s.exits, msg)
}

func (s *nodeSet) reap(n *nodeProc, id string, cmd *exec.Cmd, f *os.File, exited chan struct{}) {
	err := cmd.Wait()
	n.mu.Lock()
	expected := n.expected
	if n.cmd == cmd {
		n.cmd = nil
	}
	n.mu.Unlock()
	fmt.Fprintf(f, "=== jepsen: %s exited at %s: %v\n", id, time.Now().UTC().Format(time.RFC3339Nano), err)
	f.Close()
	if !expected {
		s.note(fmt.Sprintf("%s at %s: %v", id, fmtNs(s.rec()), err))
	}
	close(exited)
}

func (s *nodeSet) signal(slot string, sig syscall.Signal) error {
	n := s.get(slot)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return fmt.Errorf("%s is not running", n.id)
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
func (s *nodeSet) kill(slot string) error {
	n := s.get(slot)
	n.mu.Lock()
	id := n.id
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
func (s *nodeSet) running(slot string) bool {
	n := s.get(slot)
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

// healAll resumes paused nodes and restarts killed ones; a vacant slot is
// left to the membership nemesis.
func (s *nodeSet) healAll() []string {
	var did []string
	for _, n := range s.nodes {
		n.mu.Lock()
		id, paused, alive, vacant := n.id, n.paused, n.cmd != nil, n.vacant
		n.mu.Unlock()
		switch {
		case vacant:
		case alive && paused:
			if err := s.signal(n.slot, syscall.SIGCONT); err == nil {
				did = append(did, "resumed "+id)
			}
		case !alive:
			if err := s.start(n.slot); err == nil {
				did = append(did, "restarted "+id)
			} else {
				did = append(did, fmt.Sprintf("restart %s: %v", id, err))
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
		id, cmd, exited := n.terminateLocked()
		n.mu.Unlock()
		if cmd == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var note string
			if !awaitStop(cmd, exited, timeout) {
				note = fmt.Sprintf("%s did not stop within %v of SIGTERM (goroutine dump from SIGQUIT in %s.log)", id, timeout, id)
			} else if st := cmd.ProcessState; st != nil && !st.Success() {
				note = fmt.Sprintf("%s exited with %v after SIGTERM", id, st)
			}
			if note != "" {
				mu.Lock()
				notes = append(notes, note)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return notes
}

// terminateLocked sends the node's process (if any) SIGTERM, after SIGCONT
// in case it is paused, and marks the exit as asked for; n.mu is held.
func (n *nodeProc) terminateLocked() (id string, cmd *exec.Cmd, exited chan struct{}) {
	if n.cmd != nil {
		n.expected = true
		n.cmd.Process.Signal(syscall.SIGCONT)
		n.cmd.Process.Signal(syscall.SIGTERM)
	}
	return n.id, n.cmd, n.exited
}

// awaitStop waits up to timeout for a process sent SIGTERM to exit and
// reports whether it did. Past it comes SIGQUIT, which makes the Go runtime
// write every goroutine's stack to the node's log (the evidence of where
// shutdown hangs), then SIGKILL five seconds later.
func awaitStop(cmd *exec.Cmd, exited <-chan struct{}, timeout time.Duration) bool {
	select {
	case <-exited:
		return true
	case <-time.After(timeout):
	}
	cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		cmd.Process.Signal(syscall.SIGKILL)
		<-exited
	}
	return false
}

// killAllNow is the teardown path: SIGKILL whatever still runs.
func (s *nodeSet) killAllNow() error {
	var errs []error
	for _, n := range s.nodes {
		if s.running(n.slot) {
			errs = append(errs, s.kill(n.slot))
		}
	}
	return errors.Join(errs...)
}

func (s *nodeSet) unexpectedExits() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.exits...)
}

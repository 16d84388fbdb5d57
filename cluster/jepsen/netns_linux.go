//go:build linux

package jepsen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Prerequisites reports, in one line, what this machine lacks to run
// scenarios: root, ip and nft.
func Prerequisites() error {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool+" (apt-get install "+map[string]string{"ip": "iproute2", "nft": "nftables"}[tool]+")")
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("jepsen scenarios need root, ip and nft; missing: %s", strings.Join(missing, ", "))
	}
	return nil
}

// Topology is the run's namespaces: a bridge, one namespace per node and
// the controller's.
type Topology struct {
	prefix string
	nodes  []string
	ips    map[string]string
	ctlIP  string
	log    *slog.Logger
}

// NewTopology plans the namespaces for nodes in 10.213.octet.0/24. Node k
// (1-based) gets .10+k; the controller .2.
func NewTopology(prefix string, octet int, nodes []string, log *slog.Logger) *Topology {
	t := &Topology{prefix: prefix, nodes: nodes, ips: map[string]string{}, log: log,
		ctlIP: fmt.Sprintf("10.213.%d.2", octet)}
	for i, n := range nodes {
		t.ips[n] = fmt.Sprintf("10.213.%d.%d", octet, 11+i)
	}
	return t
}

// IP is a node's address.
func (t *Topology) IP(node string) string { return t.ips[node] }

// IPs maps node ids to addresses.
func (t *Topology) IPs() map[string]string { return t.ips }

// NS is a node's namespace name.
func (t *Topology) NS(node string) string { return t.prefix + "-" + node }

func (t *Topology) bridgeNS() string { return t.prefix + "-br" }

// CtlNS is the controller's namespace, which is never partitioned.
func (t *Topology) CtlNS() string { return t.prefix + "-ctl" }

// Table is the nftables table the run owns in each node namespace.
func (t *Topology) Table() string { return t.prefix }

func run(ctx context.Context, stdin string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// CleanStale removes namespaces left by an earlier run with this prefix,
// killing the processes still inside them (consentd nodes of that run).
func CleanStale(ctx context.Context, prefix string, log *slog.Logger) error {
	out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output()
	if err != nil {
		return fmt.Errorf("ip netns list: %w", err)
	}
	var errs []error
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		if !strings.HasPrefix(name, prefix+"-") {
			continue
		}
		log.Info("removing stale namespace", "ns", name)
		killNamespacePids(ctx, name)
		if err := run(ctx, "", "ip", "netns", "del", name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func killNamespacePids(ctx context.Context, ns string) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "pids", ns).Output()
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(out)) {
		// Never ourselves: our dialer threads live in the ctl namespace.
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
			syscall.Kill(pid, syscall.SIGCONT)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// Up removes stale namespaces of the prefix and creates the run's.
func (t *Topology) Up(ctx context.Context) error {
	if err := CleanStale(ctx, t.prefix, t.log); err != nil {
		return err
	}
	br := t.bridgeNS()
	cmds := [][]string{
		{"ip", "netns", "add", br},
		{"ip", "-n", br, "link", "set", "lo", "up"},
		{"ip", "-n", br, "link", "add", "br0", "type", "bridge"},
		{"ip", "-n", br, "link", "set", "br0", "up"},
	}
	attach := func(ns, vname, ip string) {
		cmds = append(cmds,
			[]string{"ip", "netns", "add", ns},
			[]string{"ip", "-n", ns, "link", "set", "lo", "up"},
			[]string{"ip", "-n", br, "link", "add", vname, "type", "veth", "peer", "name", "eth0", "netns", ns},
			[]string{"ip", "-n", br, "link", "set", vname, "master", "br0"},
			[]string{"ip", "-n", br, "link", "set", vname, "up"},
			[]string{"ip", "-n", ns, "addr", "add", ip + "/24", "dev", "eth0"},
			[]string{"ip", "-n", ns, "link", "set", "eth0", "up"},
		)
	}
	attach(t.CtlNS(), "vctl", t.ctlIP)
	for _, n := range t.nodes {
		attach(t.NS(n), "v"+n, t.ips[n])
	}
	for _, c := range cmds {
		if err := run(ctx, "", c[0], c[1:]...); err != nil {
			return err
		}
	}
	for _, n := range t.nodes {
		if err := t.ApplyRules(ctx, n, NodeRules{}); err != nil {
			return err
		}
	}
	return nil
}

// Down kills whatever still runs in the run's namespaces and deletes them,
// which also removes their veths and nftables tables.
func (t *Topology) Down() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return CleanStale(ctx, t.prefix, t.log)
}

// ApplyRules replaces a node's nftables table with r.
func (t *Topology) ApplyRules(ctx context.Context, node string, r NodeRules) error {
	return run(ctx, nftScript(t.Table(), r), "ip", "netns", "exec", t.NS(node), "nft", "-f", "-")
}

// StarveCounts reads the counters of a node's starve rules (see NodeRules).
func (t *Topology) StarveCounts(ctx context.Context, node string) (StarveCounts, error) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", t.NS(node), "nft", "list", "table", "inet", t.Table()).CombinedOutput()
	if err != nil {
		return StarveCounts{}, fmt.Errorf("nft list table in %s: %w: %s", t.NS(node), err, bytes.TrimSpace(out))
	}
	c, ok := parseStarveCounts(string(out))
	if !ok {
		return c, fmt.Errorf("no starve rules in %s", t.NS(node))
	}
	return c, nil
}

// Connections counts node's established TCP connections to ip:port.
func (t *Topology) Connections(ctx context.Context, node, ip string, port int) (int, error) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", t.NS(node), "ss", "-Htn", "state", "established",
		"dst", ip, "dport", "=", fmt.Sprintf(":%d", port)).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("ss in %s: %w: %s", t.NS(node), err, bytes.TrimSpace(out))
	}
	n := 0
	for _, line := range strings.Split(string(out), "\n") {
		if strings.TrimSpace(line) != "" {
			n++
		}
	}
	return n, nil
}

// NodeCommand builds a command that runs inside a node's namespace; ip
// netns exec execs the program, so the process id is the program's.
func (t *Topology) NodeCommand(node, bin string, args ...string) *exec.Cmd {
	cmd := exec.Command("ip", append([]string{"netns", "exec", t.NS(node), bin}, args...)...)
	// A runner that dies must not leave nodes running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// NSDialer creates sockets inside one network namespace: each worker is a
// goroutine locked to an OS thread that entered the namespace; a socket
// keeps its namespace for life, so the connections it returns can be used
// from any goroutine.
type NSDialer struct {
	reqs  chan dialReq
	close sync.Once
}

type dialReq struct {
	ctx           context.Context
	network, addr string
	reply         chan dialReply
}

type dialReply struct {
	conn net.Conn
	err  error
}

// NewNSDialer starts workers dialling from the named namespace.
func NewNSDialer(ns string, workers int) (*NSDialer, error) {
	d := &NSDialer{reqs: make(chan dialReq)}
	ready := make(chan error, workers)
	for i := 0; i < workers; i++ {
		go d.worker(ns, ready)
	}
	var errs []error
	for i := 0; i < workers; i++ {
		errs = append(errs, <-ready)
	}
	if err := errors.Join(errs...); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func (d *NSDialer) worker(ns string, ready chan<- error) {
	// Never unlocked: the thread has left the root namespace, so it must
	// end with this goroutine rather than return to the scheduler's pool.
	runtime.LockOSThread()
	if unix.Gettid() == os.Getpid() {
		// The main thread stands for the whole process in /proc/PID/ns/net
		// and is never retired; hand over to a worker on another thread,
		// keeping this one locked until then so it cannot take the place.
		handover := make(chan error, 1)
		go d.worker(ns, handover)
		err := <-handover
		runtime.UnlockOSThread()
		ready <- err
		return
	}
	f, err := os.Open("/run/netns/" + ns)
	if err != nil {
		ready <- fmt.Errorf("open namespace %s: %w", ns, err)
		return
	}
	err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
	f.Close()
	if err != nil {
		ready <- fmt.Errorf("setns %s: %w", ns, err)
		return
	}
	ready <- nil
	var dialer net.Dialer
	for req := range d.reqs {
		c, err := dialer.DialContext(req.ctx, req.network, req.addr)
		req.reply <- dialReply{c, err}
	}
}

// DialContext dials addr from the namespace.
func (d *NSDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	req := dialReq{ctx: ctx, network: network, addr: addr, reply: make(chan dialReply, 1)}
	select {
	case d.reqs <- req:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case r := <-req.reply:
		return r.conn, r.err
	case <-ctx.Done():
		// The worker still replies; close what it returns.
		go func() {
			if r := <-req.reply; r.conn != nil {
				r.conn.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// Close stops the workers; their threads exit with them.
func (d *NSDialer) Close() { d.close.Do(func() { close(d.reqs) }) }

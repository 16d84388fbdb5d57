package node_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"github.com/lmc-consent/consentd/internal/testnet"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/lmc-consent/consentd/cluster"
	"github.com/lmc-consent/consentd/fsm"
	"github.com/lmc-consent/consentd/node"
	"github.com/lmc-consent/consentd/pki"
	consentv1 "github.com/lmc-consent/consentd/proto/consent/v1"
	"github.com/lmc-consent/consentd/raftnode"
)

// testCluster is a real in-process cluster: real raft on loopback TCP, real
// bbolt files in a temp dir, real gRPC servers.
type testCluster struct {
	t     testing.TB
	dir   string
	specs []cluster.NodeSpec
	nodes []*node.Node // nil when stopped
	mu    sync.Mutex   // guards conns: workers share clients
	conns map[string]*grpc.ClientConn
	tune  func(*node.Config)
	// certDir holds the CA and certificates when the cluster runs on mTLS.
	certDir string
}

// fastRaft shortens timeouts so elections take hundreds of milliseconds.
func fastRaft(c *node.Config) {
	c.Raft.HeartbeatTimeout = 300 * time.Millisecond
	c.Raft.ElectionTimeout = 300 * time.Millisecond
	c.Raft.LeaderLeaseTimeout = 150 * time.Millisecond
	c.Cluster.PublishInterval = 200 * time.Millisecond
	// The tests write as one caller from many goroutines on purpose.
	c.API.RateLimit = -1
}

// testLogger shows node logs when CONSENTD_TEST_LOG is set (debug, info...).
func testLogger() *slog.Logger {
	lvl, ok := os.LookupEnv("CONSENTD_TEST_LOG")
	if !ok {
		return nil
	}
	var l slog.Level
	l.UnmarshalText([]byte(lvl))
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

func freeAddr(t testing.TB) string { return testnet.FreeAddr(t) }

// startCluster starts n nodes on fixed free ports (so a restart keeps its
// addresses) and waits until every node is a voter and the leader is ready.
// transport is how the nodes of a test cluster talk: the core tests run on
// plain TCP and again on mutual TLS with development certificates.
type transport struct {
	name   string
	secure bool
}

var transports = []transport{{"plain", false}, {"mtls", true}}

// onEveryTransport runs fn once per transport.
func onEveryTransport(t *testing.T, fn func(t *testing.T, tr transport)) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) { fn(t, tr) })
	}
}

func startClusterOn(t testing.TB, tr transport, n int, tune ...func(*node.Config)) *testCluster {
	t.Helper()
	tc := &testCluster{t: t, dir: t.TempDir(), conns: map[string]*grpc.ClientConn{}}
	if tr.secure {
		tc.certDir = filepath.Join(tc.dir, "certs")
		var ids []string
		// n9 is never started: a valid node certificate of a non-member.
		for i := 1; i <= n; i++ {
			ids = append(ids, fmt.Sprintf("n%d", i))
		}
		ids = append(ids, "n9")
		if err := pki.WriteDevSet(tc.certDir, pki.DevSet{Cluster: testPKICluster, Nodes: ids, Hosts: []string{"127.0.0.1"}, Callers: pki.DefaultDevCallers()}); err != nil {
			t.Fatal(err)
		}
	}
	tc.tune = func(c *node.Config) {
		fastRaft(c)
		for _, f := range tune {
			f(c)
		}
	}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("n%d", i+1)
		tc.specs = append(tc.specs, cluster.NodeSpec{
			ID: id, DataDir: filepath.Join(tc.dir, id),
			RaftAddr: freeAddr(t), GRPCAddr: freeAddr(t), HTTPAddr: freeAddr(t), Bootstrap: i == 0,
		})
	}
	tc.nodes = make([]*node.Node, n)
	for i := range tc.specs {
		if i > 0 {
			tc.specs[i].Join = []string{tc.specs[0].GRPCAddr}
		}
		tc.start(i)
	}
	t.Cleanup(func() {
		tc.stopAll()
		for _, c := range tc.conns {
			c.Close()
		}
	})
	tc.waitHealthy(n)
	return tc
}

func (tc *testCluster) start(i int) {
	tc.t.Helper()
	s := tc.specs[i]
	cfg := node.Config{
		ID: s.ID, DataDir: s.DataDir, RaftAddr: s.RaftAddr, GRPCAddr: s.GRPCAddr, HTTPAddr: s.HTTPAddr,
		Bootstrap: s.Bootstrap, Join: s.Join, Insecure: tc.certDir == "", Version: "test", Logger: testLogger(),
	}
	if tc.certDir != "" {
		src, err := pki.NewSource(certFiles(tc.certDir, s.ID), testPKICluster, nil)
		if err != nil {
			tc.t.Fatal(err)
		}
		cfg.TLS = src
	}
	tc.tune(&cfg)
	n, err := node.Start(context.Background(), cfg)
	if err != nil {
		tc.t.Fatalf("start %s: %v", s.ID, err)
	}
	tc.nodes[i] = n
}

func (tc *testCluster) stop(i int) {
	if n := tc.nodes[i]; n != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			tc.t.Logf("shutdown %s: %v", n.ID(), err)
		}
		tc.nodes[i] = nil
	}
}

func (tc *testCluster) stopAll() {
	for i := len(tc.nodes) - 1; i >= 0; i-- {
		tc.stop(i)
	}
}

func (tc *testCluster) client(i int) consentv1.ConsentServiceClient {
	tc.t.Helper()
	addr := tc.specs[i].GRPCAddr
	tc.mu.Lock()
	defer tc.mu.Unlock()
	c, ok := tc.conns[addr]
	if !ok {
		var err error
		creds := insecure.NewCredentials()
		if tc.certDir != "" {
			// A practice may read and record: everything these tests do.
			creds = callerCreds(tc.t, tc.certDir, "practice")
		}
		c, err = grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			tc.t.Fatal(err)
		}
		tc.conns[addr] = c
	}
	return consentv1.NewConsentServiceClient(c)
}

// leader returns the index of the node that leads and has confirmed its term.
func (tc *testCluster) leader() (int, bool) {
	for i, n := range tc.nodes {
		if n != nil && n.Raft().Status().Ready {
			return i, true
		}
	}
	return -1, false
}

func (tc *testCluster) waitLeader(timeout time.Duration) int {
	tc.t.Helper()
	var li int
	waitFor(tc.t, timeout, func() error {
		var ok bool
		if li, ok = tc.leader(); !ok {
			return errors.New("no ready leader")
		}
		return nil
	})
	return li
}

// waitHealthy waits for a ready leader with `voters` voters whose addresses
// are all published.
func (tc *testCluster) waitHealthy(voters int) {
	tc.t.Helper()
	waitFor(tc.t, 20*time.Second, func() error {
		li, ok := tc.leader()
		if !ok {
			return errors.New("no ready leader")
		}
		members, err := tc.nodes[li].Raft().Members()
		if err != nil {
			return err
		}
		got := 0
		for _, m := range members {
			if m.Suffrage == "voter" {
				got++
			}
		}
		if got != voters {
			return fmt.Errorf("%d voters, want %d", got, voters)
		}
		nodes, err := tc.nodes[li].Store().Nodes()
		if err != nil {
			return err
		}
		if len(nodes) < voters {
			return fmt.Errorf("%d nodes published, want %d", len(nodes), voters)
		}
		return nil
	})
}

func waitFor(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("condition not met within %v: %v", timeout, err)
}

func record(ctx context.Context, c consentv1.ConsentServiceClient, nhs, state, reqID string) (*consentv1.RecordDecisionResponse, error) {
	return c.RecordDecision(ctx, &consentv1.RecordDecisionRequest{
		NhsNumber: nhs, Kind: "scr", State: state, Channel: "in_person",
		DecisionMaker: &consentv1.DecisionMaker{Type: "patient"}, RequestId: reqID,
	})
}

// recordRetrying retries a write whose outcome is unknown with the same
// request id, as the API tells clients to: under -race on two cores a
// 150 ms leader lease can lapse in any test. Tests about unknown outcomes
// themselves use record.
func recordRetrying(ctx context.Context, c consentv1.ConsentServiceClient, nhs, state, reqID string) (*consentv1.RecordDecisionResponse, error) {
	for {
		resp, err := record(ctx, c, nhs, state, reqID)
		switch status.Code(err) {
		case codes.Unavailable, codes.DeadlineExceeded:
			if ctx.Err() != nil {
				return nil, err
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		return resp, err
	}
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func scrState(t testing.TB, resp *consentv1.GetConsentsResponse) (string, uint64) {
	t.Helper()
	for _, c := range resp.GetConsents() {
		if c.GetKind() == "scr" {
			return c.GetState(), c.GetVersion()
		}
	}
	t.Fatalf("no scr in %v", resp)
	return "", 0
}

func TestWriteOnFollowerIsForwarded(t *testing.T) {
	onEveryTransport(t, testWriteOnFollowerIsForwarded)
}

func testWriteOnFollowerIsForwarded(t *testing.T, tr transport) {
	tc := startClusterOn(t, tr, 3)
	li := tc.waitLeader(5 * time.Second)
	fi := (li + 1) % 3
	resp, err := recordRetrying(ctxT(t, 10*time.Second), tc.client(fi), fsm.TestNHSNumber(1), "dissent", "fwd-1")
	if err != nil {
		t.Fatalf("write on follower %s: %v", tc.specs[fi].ID, err)
	}
	if got := resp.GetDecision().GetAcceptedBy(); got != tc.specs[fi].ID {
		t.Errorf("accepted_by = %q, want the follower %q", got, tc.specs[fi].ID)
	}
	if resp.GetDecision().GetRevision() == 0 || resp.GetConsent().GetState() != "dissent" || !resp.GetChanged() {
		t.Errorf("unexpected response %v", resp)
	}
	// The leader proposed it: its register commits the entry at that
	// index (within the commit interval: nothing reads it here).
	waitFor(t, 5*time.Second, func() error {
		if applied := tc.nodes[li].Store().AppliedIndex(); applied < resp.GetDecision().GetRevision() {
			return fmt.Errorf("leader applied %d < revision %d", applied, resp.GetDecision().GetRevision())
		}
		return nil
	})
}

// Every read straight after an acknowledged write, on every node, sees it:
// no polling, so a stale follower read fails the test.
func TestLinearizableReadOnEveryNodeAfterWrite(t *testing.T) {
	onEveryTransport(t, testLinearizableReadOnEveryNodeAfterWrite)
}

func testLinearizableReadOnEveryNodeAfterWrite(t *testing.T, tr transport) {
	tc := startClusterOn(t, tr, 3)
	ctx := ctxT(t, 60*time.Second)
	states := []string{"dissent", "consent_core", "consent_core_additional", "implied_core"}
	nhs := fsm.TestNHSNumber(2)
	for round := 0; round < 20; round++ {
		state := states[round%len(states)]
		writer := round % 3
		resp, err := recordRetrying(ctx, tc.client(writer), nhs, state, fmt.Sprintf("lin-%d", round))
		if err != nil {
			t.Fatalf("round %d write on n%d: %v", round, writer+1, err)
		}
		for i := range tc.nodes {
			got, err := tc.client(i).GetConsents(ctx, &consentv1.GetConsentsRequest{NhsNumber: nhs})
			if err != nil {
				t.Fatalf("round %d read on n%d: %v", round, i+1, err)
			}
			st, ver := scrState(t, got)
			if st != state || ver != resp.GetDecision().GetVersion() {
				t.Fatalf("round %d: n%d read %s v%d, want %s v%d (stale read)", round, i+1, st, ver, state, resp.GetDecision().GetVersion())
			}
			if got.GetRevision() < resp.GetDecision().GetRevision() {
				t.Fatalf("round %d: n%d revision %d below the write's %d", round, i+1, got.GetRevision(), resp.GetDecision().GetRevision())
			}
		}
	}
}

func TestLeaderKillElectsNewLeaderAndLosesNoWrite(t *testing.T) {
	onEveryTransport(t, testLeaderKillElectsNewLeaderAndLosesNoWrite)
}

func testLeaderKillElectsNewLeaderAndLosesNoWrite(t *testing.T, tr transport) {
	tc := startClusterOn(t, tr, 3)
	ctx := ctxT(t, 60*time.Second)
	const n = 60
	var mu sync.Mutex
	acked := map[string]string{}
	var wg sync.WaitGroup
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += 3 {
				nhs := fsm.TestNHSNumber(100 + i)
				state := []string{"dissent", "consent_core"}[i%2]
				if _, err := record(ctx, tc.client(w), nhs, state, fmt.Sprintf("kill-%d", i)); err == nil {
					mu.Lock()
					acked[nhs] = state
					mu.Unlock()
				}
			}
		}(w)
	}
	wg.Wait()
	if len(acked) != n {
		t.Fatalf("only %d of %d writes acknowledged before the kill", len(acked), n)
	}
	li := tc.waitLeader(5 * time.Second)
	killed := tc.specs[li].ID
	if err := tc.nodes[li].Kill(); err != nil {
		t.Logf("kill %s: %v", killed, err)
	}
	tc.nodes[li] = nil
	start := time.Now()
	newLeader := tc.waitLeader(5 * time.Second)
	t.Logf("killed leader %s; %s leads after %v", killed, tc.specs[newLeader].ID, time.Since(start).Round(time.Millisecond))

	for i, nd := range tc.nodes {
		if nd == nil {
			continue
		}
		for nhs, want := range acked {
			got, err := tc.client(i).GetConsents(ctx, &consentv1.GetConsentsRequest{NhsNumber: nhs})
			if err != nil {
				t.Fatalf("read %s on %s: %v", nhs, tc.specs[i].ID, err)
			}
			if st, _ := scrState(t, got); st != want {
				t.Fatalf("%s on %s: state %s, want acknowledged %s (lost write)", nhs, tc.specs[i].ID, st, want)
			}
		}
	}
	// The survivors still accept writes.
	if _, err := recordRetrying(ctx, tc.client((li+1)%3), fsm.TestNHSNumber(999), "dissent", "after-kill"); err != nil {
		t.Fatalf("write after leader kill: %v", err)
	}
}

func TestLaggingFollowerCatchesUpBySnapshot(t *testing.T) {
	onEveryTransport(t, testLaggingFollowerCatchesUpBySnapshot)
}

func testLaggingFollowerCatchesUpBySnapshot(t *testing.T, tr transport) {
	if testing.Short() {
		t.Skip("writes 10,000 entries")
	}
	tc := startClusterOn(t, tr, 3, func(c *node.Config) {
		c.Raft.SnapshotThreshold = 1000
		c.Raft.SnapshotInterval = 200 * time.Millisecond
		c.Raft.TrailingLogs = 100
	})
	li := tc.waitLeader(5 * time.Second)
	lag := (li + 1) % 3
	lagApplied := tc.nodes[lag].Store().AppliedIndex()
	tc.stop(lag)

	ctx := ctxT(t, 120*time.Second)
	const total, workers = 10000, 32
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c := tc.client(li)
			for i := w; i < total; i += workers {
				if _, err := recordRetrying(ctx, c, fsm.TestNHSNumber(1000+i%500), []string{"dissent", "consent_core"}[i%2], fmt.Sprintf("snap-%d", i)); err != nil {
					errs <- fmt.Errorf("write %d: %w", i, err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	leader := tc.nodes[li].Raft()
	waitFor(t, 30*time.Second, func() error {
		if first := leaderFirstIndex(leader); first <= lagApplied+1 {
			return fmt.Errorf("leader log still starts at %d (follower stopped at %d)", first, lagApplied)
		}
		return nil
	})

	tc.start(lag)
	waitFor(t, 60*time.Second, func() error {
		got, want := tc.nodes[lag].Store().AppliedIndex(), tc.nodes[li].Store().AppliedIndex()
		if got < want {
			return fmt.Errorf("follower applied %d, leader %d", got, want)
		}
		return nil
	})
	if r := tc.nodes[lag].Raft().SnapshotRestores(); r == 0 {
		t.Fatalf("follower caught up without a snapshot install; the test did not exercise compaction")
	}
	waitFor(t, 10*time.Second, func() error { return sameDigests(tc, tc.nodes[li].Store().AppliedIndex()) })
}

// leaderFirstIndex is the first index still in the leader's log: above the
// follower's last index means it can only catch up by snapshot.
func leaderFirstIndex(r *raftnode.Node) uint64 { return r.FirstLogIndex() }

// sameDigests checks that every running node's register is the same and
// has committed at least index atLeast: registers commit on their own
// timers, so equal digests alone may be equal older states.
func sameDigests(tc *testCluster, atLeast uint64) error {
	var first string
	var firstRev uint64
	for _, n := range tc.nodes {
		if n == nil {
			continue
		}
		rev, d, err := n.Store().Digest()
		if err != nil {
			return err
		}
		if first == "" {
			first, firstRev = d, rev
			continue
		}
		if rev < atLeast {
			return fmt.Errorf("%s committed up to %d, want %d", n.ID(), rev, atLeast)
		}
		if d != first || rev != firstRev {
			return fmt.Errorf("%s digest %s@%d differs from %s@%d", n.ID(), d[:12], rev, first[:12], firstRev)
		}
	}
	return nil
}

func TestRestartKeepsDataWithoutReplay(t *testing.T) {
	onEveryTransport(t, testRestartKeepsDataWithoutReplay)
}

func testRestartKeepsDataWithoutReplay(t *testing.T, tr transport) {
	tc := startClusterOn(t, tr, 3)
	ctx := ctxT(t, 60*time.Second)
	want := map[string]string{}
	var last uint64
	for i := 0; i < 30; i++ {
		nhs := fsm.TestNHSNumber(300 + i)
		state := []string{"dissent", "consent_core_additional"}[i%2]
		resp, err := recordRetrying(ctx, tc.client(i%3), nhs, state, fmt.Sprintf("rs-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		want[nhs] = state
		last = max(last, resp.GetDecision().GetRevision())
	}
	waitFor(t, 10*time.Second, func() error { return sameDigests(tc, last) })
	rev, digest, err := tc.nodes[0].Store().Digest()
	if err != nil {
		t.Fatal(err)
	}
	tc.stopAll()

	// One node alone has no quorum, so raft can replay nothing: whatever it
	// serves comes from its register file.
	tc.start(2)
	if got := tc.nodes[2].Store().AppliedIndex(); got != rev {
		t.Fatalf("applied index after restart = %d, want %d", got, rev)
	}
	for nhs, st := range want {
		resp, err := tc.client(2).GetConsents(ctx, &consentv1.GetConsentsRequest{NhsNumber: nhs, Consistency: "stale"})
		if err != nil {
			t.Fatalf("stale read without quorum: %v", err)
		}
		if got, _ := scrState(t, resp); got != st {
			t.Fatalf("%s: %s after restart, want %s", nhs, got, st)
		}
	}
	// Without quorum a linearizable read must refuse rather than guess.
	short, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	_, err = tc.client(2).GetConsents(short, &consentv1.GetConsentsRequest{NhsNumber: fsm.TestNHSNumber(300)})
	cancel()
	if err == nil {
		t.Fatal("linearizable read succeeded on a node without quorum")
	}

	tc.start(0)
	tc.start(1)
	tc.waitLeader(10 * time.Second)
	for i, n := range tc.nodes {
		r, d, err := n.Store().Digest()
		if err != nil {
			t.Fatal(err)
		}
		if r < rev || (r == rev && d != digest) {
			t.Fatalf("n%d after restart: %s@%d, before: %s@%d", i+1, d, r, digest, rev)
		}
		if n.Raft().SnapshotRestores() != 0 {
			t.Fatalf("n%d restored a snapshot on start; the register should have been used as is", i+1)
		}
	}
	for nhs, st := range want {
		resp, err := tc.client(0).GetConsents(ctx, &consentv1.GetConsentsRequest{NhsNumber: nhs})
		if err != nil {
			t.Fatal(err)
		}
		if got, v := scrState(t, resp); got != st || v != 1 {
			t.Fatalf("%s: %s v%d after full restart, want %s v1 (re-applied or lost)", nhs, got, v, st)
		}
	}
}

const testPKICluster = "consentd-test"

func certFiles(dir, name string) pki.Files {
	return pki.Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, name+".pem"), Key: filepath.Join(dir, name+"-key.pem")}
}

func callerCreds(t testing.TB, dir, name string) credentials.TransportCredentials {
	t.Helper()
	f := certFiles(dir, name)
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12})
}

// TestRaftPortAdmitsOnlyMemberNodes dials the raft port of a running mTLS
// node with each kind of certificate: only a member node's gets past the
// handshake.
func TestRaftPortAdmitsOnlyMemberNodes(t *testing.T) {
	tc := startClusterOn(t, transport{"mtls", true}, 3)
	caPEM, _ := os.ReadFile(filepath.Join(tc.certDir, "ca.pem"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	for _, c := range []struct {
		cert  string
		admit bool
	}{
		{"n2", true},
		{"n9", false},       // a node of the cluster's CA, not in the raft configuration
		{"practice", false}, // a caller certificate
		{"", false},         // none
	} {
		t.Run("as "+c.cert, func(t *testing.T) {
			cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
			if c.cert != "" {
				f := certFiles(tc.certDir, c.cert)
				kp, err := tls.LoadX509KeyPair(f.Cert, f.Key)
				if err != nil {
					t.Fatal(err)
				}
				cfg.Certificates = []tls.Certificate{kp}
			}
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", tc.specs[0].RaftAddr, cfg)
			if err == nil {
				defer conn.Close()
				// TLS 1.3 lets the client finish first; the server's verdict
				// on the client certificate arrives on the next read.
				conn.SetReadDeadline(time.Now().Add(time.Second))
				_, err = conn.Read(make([]byte, 1))
			}
			var ne net.Error
			admitted := errors.As(err, &ne) && ne.Timeout() // raft waits for an RPC
			if admitted != c.admit {
				t.Fatalf("admitted=%v (%v), want %v", admitted, err, c.admit)
			}
		})
	}
}

// TestRemovingTheLeaderItself: the leader asked to remove itself answers
// success once the change commits (it used to wait out the deadline), the
// others elect a new leader and drop its address, and the removed node
// still shuts down promptly (its raft had stopped under queued reads).
func TestRemovingTheLeaderItself(t *testing.T) {
	tc := startClusterOn(t, transport{name: "plain"}, 3)
	li := tc.waitLeader(5 * time.Second)
	id := tc.specs[li].ID
	ctx := ctxT(t, 30*time.Second)
	// Reads in flight on the leader while it leaves.
	stopReads := make(chan struct{})
	var readers sync.WaitGroup
	for r := 0; r < 4; r++ {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				select {
				case <-stopReads:
					return
				default:
				}
				rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				tc.client(li).GetConsents(rctx, &consentv1.GetConsentsRequest{NhsNumber: fsm.TestNHSNumber(1)})
				cancel()
			}
		}()
	}
	cc, err := grpc.NewClient(tc.specs[li].GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	start := time.Now()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = consentv1.NewClusterServiceClient(cc).RemoveMember(rctx, &consentv1.RemoveMemberRequest{Id: id})
	cancel()
	if err != nil {
		t.Fatalf("leader removing itself: %v after %v", err, time.Since(start))
	}
	close(stopReads)
	readers.Wait()

	others := []int{(li + 1) % 3, (li + 2) % 3}
	waitFor(t, 10*time.Second, func() error {
		for _, i := range others {
			if tc.nodes[i].Raft().Status().Ready {
				return nil
			}
		}
		return errors.New("no new leader")
	})
	waitFor(t, 10*time.Second, func() error {
		for _, i := range others {
			ms, err := tc.nodes[i].Raft().Members()
			if err != nil {
				return err
			}
			for _, m := range ms {
				if m.ID == id {
					return fmt.Errorf("%s still sees %s as a member", tc.specs[i].ID, id)
				}
			}
			nodes, err := tc.nodes[i].Store().Nodes()
			if err != nil {
				return err
			}
			for _, n := range nodes {
				if n.GetId() == id {
					return fmt.Errorf("%s still has %s's addresses", tc.specs[i].ID, id)
				}
			}
		}
		return nil
	})
	done := make(chan error, 1)
	go func() {
		sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		done <- tc.nodes[li].Shutdown(sctx)
	}()
	select {
	case <-done:
	case <-time.After(25 * time.Second):
		t.Fatal("the removed leader did not shut down")
	}
	tc.nodes[li] = nil
	if _, err := recordRetrying(ctx, tc.client(others[0]), fsm.TestNHSNumber(2), "dissent", "after-remove"); err != nil {
		t.Fatalf("write after the leader left: %v", err)
	}
}

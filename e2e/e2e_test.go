package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"github.com/lmc-consent/consentd/internal/testnet"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/lmc-consent/consentd/fsm"
	consentv1 "github.com/lmc-consent/consentd/proto/consent/v1"
)

type proc struct {
	id, dataDir              string
	raft, grpcAddr, httpAddr string
	flags                    []string // transport flags: --insecure, or the certificate files
	cmd                      *exec.Cmd
	log                      *os.File
}

func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "consentd")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/consentd").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freePort(t *testing.T) string { return testnet.FreeAddr(t) }

func (p *proc) start(t *testing.T, bin string, extra ...string) {
	t.Helper()
	args := append([]string{
		"--id", p.id, "--data-dir", p.dataDir, "--raft-addr", p.raft, "--grpc-addr", p.grpcAddr,
		"--http-addr", p.httpAddr, "--heartbeat-timeout", "400ms", "--election-timeout", "400ms",
		"--log-level", "info",
	}, append(p.flags, extra...)...)
	var err error
	p.log, err = os.OpenFile(filepath.Join(filepath.Dir(p.dataDir), p.id+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
}

func (p *proc) kill() {
	if p.cmd != nil && p.cmd.Process != nil {
		p.cmd.Process.Signal(syscall.SIGKILL)
		p.cmd.Wait()
		p.cmd = nil
	}
	if p.log != nil {
		p.log.Close()
		p.log = nil
	}
}

func (p *proc) term(t *testing.T) {
	t.Helper()
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s exited after SIGTERM with %v", p.id, err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("%s did not stop within 30s of SIGTERM", p.id)
		p.cmd.Process.Kill()
	}
	p.cmd = nil
	p.log.Close()
	p.log = nil
}

func waitFor(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("not within %v: %v", timeout, err)
}

// world is how the test reaches the nodes: plain TCP, or mutual TLS with
// certificates made by `consentd certs`, calling as a practice.
type world struct {
	scheme string
	client *http.Client
	creds  credentials.TransportCredentials
	// certDir holds the certificates on mTLS.
	certDir string
}

func plainWorld() *world {
	return &world{scheme: "http://", client: &http.Client{Timeout: 15 * time.Second}, creds: insecure.NewCredentials()}
}

func mtlsWorld(t *testing.T, bin, dir string) *world {
	t.Helper()
	certDir := filepath.Join(dir, "certs")
	out, err := exec.Command(bin, "certs", "--dir", certDir, "--nodes", "n1,n2,n3", "--hosts", "127.0.0.1").CombinedOutput()
	if err != nil {
		t.Fatalf("consentd certs: %v\n%s", err, out)
	}
	cfg := callerTLS(t, certDir, "practice")
	return &world{scheme: "https://", certDir: certDir, creds: credentials.NewTLS(cfg),
		client: &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}}
}

func callerTLS(t *testing.T, certDir, name string) *tls.Config {
	t.Helper()
	kp, err := tls.LoadX509KeyPair(filepath.Join(certDir, name+".pem"), filepath.Join(certDir, name+"-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(certDir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &tls.Config{Certificates: []tls.Certificate{kp}, RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// nodeFlags are the transport flags of node id.
func (w *world) nodeFlags(id string) []string {
	if w.certDir == "" {
		return []string{"--insecure"}
	}
	return []string{"--ca-file", filepath.Join(w.certDir, "ca.pem"), "--cert-file", filepath.Join(w.certDir, id+".pem"),
		"--key-file", filepath.Join(w.certDir, id+"-key.pem")}
}

func (w *world) httpJSON(method, url string, body any, out any) (int, []byte, error) {
	return httpJSONWith(w.client, method, url, body, out)
}

func httpJSONWith(client *http.Client, method, url string, body any, out any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, err
	}
	if out != nil && resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, raw, fmt.Errorf("decode %s: %w", raw, err)
		}
	}
	return resp.StatusCode, raw, nil
}

type statusJSON struct {
	ID       string `json:"id"`
	State    string `json:"state"`
	LeaderID string `json:"leaderId"`
	Insecure bool   `json:"insecure"`
	Members  []struct {
		ID       string `json:"id"`
		Suffrage string `json:"suffrage"`
		HTTPAddr string `json:"httpAddr"`
	} `json:"members"`
	AppliedIndex string `json:"appliedIndex"`
	StateDigest  string `json:"stateDigest"`
}

type consentsJSON struct {
	NhsNumber string `json:"nhsNumber"`
	Revision  string `json:"revision"`
	Consents  []struct {
		Kind    string `json:"kind"`
		State   string `json:"state"`
		Version string `json:"version"`
	} `json:"consents"`
}

func (c consentsJSON) state(kind string) (string, string) {
	for _, k := range c.Consents {
		if k.Kind == kind {
			return k.State, k.Version
		}
	}
	return "", ""
}

func TestThreeProcessesOverRESTAndGRPC(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	bin := buildBinary(t)
	t.Run("plain", func(t *testing.T) { threeProcesses(t, bin, plainWorld()) })
	t.Run("mtls", func(t *testing.T) { threeProcesses(t, bin, nil) })
}

// threeProcesses drives three real nodes; a nil world means mutual TLS with
// certificates made in the test's directory.
func threeProcesses(t *testing.T, bin string, w *world) {
	dir := t.TempDir()
	if w == nil {
		w = mtlsWorld(t, bin, dir)
	}
	procs := make([]*proc, 3)
	for i := range procs {
		id := fmt.Sprintf("n%d", i+1)
		procs[i] = &proc{id: id, dataDir: filepath.Join(dir, id), raft: freePort(t), grpcAddr: freePort(t), httpAddr: freePort(t), flags: w.nodeFlags(id)}
	}
	t.Cleanup(func() {
		for _, p := range procs {
			p.kill()
		}
		if t.Failed() {
			for _, p := range procs {
				b, _ := os.ReadFile(filepath.Join(dir, p.id+".log"))
				t.Logf("---- %s log (tail) ----\n%s", p.id, tail(string(b), 3000))
			}
		}
	})
	procs[0].start(t, bin, "--bootstrap")
	procs[1].start(t, bin, "--join", procs[0].grpcAddr)
	procs[2].start(t, bin, "--join", procs[1].grpcAddr+","+procs[0].grpcAddr)

	// All three are voters and every node is ready for linearizable reads.
	waitFor(t, 30*time.Second, func() error {
		for _, p := range procs {
			var st statusJSON
			code, raw, err := w.httpJSON("GET", w.scheme+p.httpAddr+"/v1/cluster/status", nil, &st)
			if err != nil || code != 200 {
				return fmt.Errorf("%s status %d %s %v", p.id, code, raw, err)
			}
			if len(st.Members) != 3 {
				return fmt.Errorf("%s sees %d members", p.id, len(st.Members))
			}
			if code, _, _ := w.httpJSON("GET", w.scheme+p.httpAddr+"/readyz", nil, nil); code != 200 {
				return fmt.Errorf("%s not ready (%d)", p.id, code)
			}
		}
		return nil
	})
	var st statusJSON
	if _, _, err := w.httpJSON("GET", w.scheme+procs[0].httpAddr+"/v1/cluster/status", nil, &st); err != nil {
		t.Fatal(err)
	}
	if st.Insecure != (w.certDir == "") {
		t.Errorf("status says insecure=%v", st.Insecure)
	}

	// REST: record on n1, read back on n3.
	var rec struct {
		Decision struct {
			ID       string `json:"id"`
			Revision string `json:"revision"`
			Version  string `json:"version"`
		} `json:"decision"`
		Changed bool `json:"changed"`
	}
	body := map[string]any{"kind": "scr", "state": "dissent", "channel": "in_person",
		"decisionMaker": map[string]string{"type": "patient"}, "requestId": "e2e-1"}
	code, raw, err := w.httpJSON("POST", w.scheme+procs[0].httpAddr+"/v1/patients/9990000018/decisions", body, &rec)
	if err != nil || code != 200 {
		t.Fatalf("record: %d %s %v", code, raw, err)
	}
	if rec.Decision.ID == "" || rec.Decision.Version != "1" || !rec.Changed {
		t.Fatalf("record response %s", raw)
	}
	var cons consentsJSON
	code, raw, err = w.httpJSON("GET", w.scheme+procs[2].httpAddr+"/v1/patients/9990000018/consents", nil, &cons)
	if err != nil || code != 200 {
		t.Fatalf("read: %d %s %v", code, raw, err)
	}
	if s, v := cons.state("scr"); s != "dissent" || v != "1" {
		t.Fatalf("n3 read %s v%s, want dissent v1: %s", s, v, raw)
	}
	if w.certDir != "" {
		// A reader is refused a write on any node; the practice that wrote
		// is stamped as recorded_by from its certificate.
		reader := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{TLSClientConfig: callerTLS(t, w.certDir, "reader")}}
		code, raw, _ = httpJSONWith(reader, "POST", w.scheme+procs[1].httpAddr+"/v1/patients/9990000018/decisions",
			map[string]any{"kind": "scr", "state": "consent_core", "channel": "in_person", "decisionMaker": map[string]string{"type": "patient"}}, nil)
		if code != 403 {
			t.Fatalf("reader write: %d %s", code, raw)
		}
		if !strings.Contains(string(raw), "reader may not") {
			t.Fatalf("reader refusal does not say why: %s", raw)
		}
	}
	// Bad input is refused with the field named, and nothing is written.
	code, raw, _ = w.httpJSON("POST", w.scheme+procs[1].httpAddr+"/v1/patients/9990000017/decisions", body, nil)
	if code != 400 || !strings.Contains(string(raw), "nhs_number") {
		t.Fatalf("wrong check digit: %d %s", code, raw)
	}

	// A bulk load: 1,000 decisions in one call on n2 (forwarded if it
	// follows), all or nothing, read back on n3.
	items := make([]map[string]any, fsm.MaxBatch)
	for i := range items {
		items[i] = map[string]any{"nhsNumber": fsm.TestNHSNumber(100 + i), "kind": "gp_secondary_use", "state": "dissent",
			"channel": "import", "decisionMaker": map[string]string{"type": "patient"}, "requestId": fmt.Sprintf("e2e-bulk-%d", i)}
	}
	var bulk struct {
		Results []struct {
			Decision struct {
				NhsNumber string `json:"nhsNumber"`
			} `json:"decision"`
			Duplicate bool `json:"duplicate"`
		} `json:"results"`
		Revision string `json:"revision"`
	}
	code, raw, err = w.httpJSON("POST", w.scheme+procs[1].httpAddr+"/v1/decisions:batchRecord", map[string]any{"decisions": items}, &bulk)
	if err != nil || code != 200 || len(bulk.Results) != fsm.MaxBatch || bulk.Results[999].Decision.NhsNumber != fsm.TestNHSNumber(1099) {
		t.Fatalf("batch record: %d %.300s %v", code, raw, err)
	}
	code, raw, err = w.httpJSON("GET", w.scheme+procs[2].httpAddr+"/v1/patients/"+fsm.TestNHSNumber(1099)+"/consents", nil, &cons)
	if s, v := cons.state("gp_secondary_use"); err != nil || code != 200 || s != "dissent" || v != "1" {
		t.Fatalf("n3 read after the batch: %d %s %v", code, raw, err)
	}

	// gRPC: record on n2, check a batch on n1.
	conns := map[string]consentv1.ConsentServiceClient{}
	for _, p := range procs {
		cc, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(w.creds))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		conns[p.id] = consentv1.NewConsentServiceClient(cc)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	acked := map[string]string{}
	for i := 0; i < 30; i++ {
		nhs := fsm.TestNHSNumber(1000 + i)
		state := []string{"dissent", "consent_core"}[i%2]
		_, err := conns[procs[i%3].id].RecordDecision(ctx, &consentv1.RecordDecisionRequest{
			NhsNumber: nhs, Kind: "scr", State: state, Channel: "phone",
			DecisionMaker: &consentv1.DecisionMaker{Type: "patient"}, RequestId: fmt.Sprintf("e2e-g-%d", i),
		})
		if err != nil {
			t.Fatalf("grpc record %d: %v", i, err)
		}
		acked[nhs] = state
	}
	var nums []string
	for nhs := range acked {
		nums = append(nums, nhs)
	}
	chk, err := conns["n1"].CheckConsents(ctx, &consentv1.CheckConsentsRequest{Kind: "scr", NhsNumbers: nums})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range chk.GetResults() {
		if acked[r.GetNhsNumber()] != r.GetState() {
			t.Fatalf("check %s: %s, want %s", r.GetNhsNumber(), r.GetState(), acked[r.GetNhsNumber()])
		}
	}

	// Kill the leader with SIGKILL; a new one is elected and nothing is lost.
	leader := -1
	for i, p := range procs {
		var s statusJSON
		if _, _, err := w.httpJSON("GET", w.scheme+p.httpAddr+"/v1/cluster/status", nil, &s); err == nil && s.State == "leader" {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatal("no leader found")
	}
	procs[leader].kill()
	start := time.Now()
	survivor := procs[(leader+1)%3]
	waitFor(t, 10*time.Second, func() error {
		code, _, err := w.httpJSON("GET", w.scheme+survivor.httpAddr+"/readyz", nil, nil)
		if err != nil || code != 200 {
			return fmt.Errorf("readyz %d %v", code, err)
		}
		return nil
	})
	t.Logf("leader %s killed; %s ready again after %v", procs[leader].id, survivor.id, time.Since(start).Round(time.Millisecond))
	for nhs, want := range acked {
		resp, err := conns[survivor.id].GetConsents(ctx, &consentv1.GetConsentsRequest{NhsNumber: nhs})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range resp.GetConsents() {
			if c.GetKind() == "scr" && c.GetState() != want {
				t.Fatalf("%s: %s after leader kill, want %s", nhs, c.GetState(), want)
			}
		}
	}
	// Invalid input over gRPC: INVALID_ARGUMENT.
	_, err = conns[survivor.id].RecordDecision(ctx, &consentv1.RecordDecisionRequest{NhsNumber: "9990000018", Kind: "nope", State: "dissent", Channel: "phone", RequestId: "bad"})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("unknown kind: %v, want InvalidArgument", err)
	}

	// The killed node restarts on its data dir with no bootstrap/join flags
	// and catches up.
	procs[leader].start(t, bin)
	waitFor(t, 30*time.Second, func() error {
		var a, b statusJSON
		if _, _, err := w.httpJSON("GET", w.scheme+procs[leader].httpAddr+"/v1/cluster/status?includeDigest=true", nil, &a); err != nil {
			return err
		}
		if _, _, err := w.httpJSON("GET", w.scheme+survivor.httpAddr+"/v1/cluster/status?includeDigest=true", nil, &b); err != nil {
			return err
		}
		if a.StateDigest == "" || a.StateDigest != b.StateDigest || a.AppliedIndex != b.AppliedIndex {
			return fmt.Errorf("restarted %s at %s/%s, survivor at %s/%s", a.ID, a.AppliedIndex, a.StateDigest, b.AppliedIndex, b.StateDigest)
		}
		return nil
	})
	code, raw, err = w.httpJSON("GET", w.scheme+procs[leader].httpAddr+"/v1/patients/9990000018/consents", nil, &cons)
	if err != nil || code != 200 {
		t.Fatalf("read on restarted node: %d %s %v", code, raw, err)
	}
	if s, _ := cons.state("scr"); s != "dissent" {
		t.Fatalf("restarted node reads %s", s)
	}

	// SIGTERM stops every node cleanly.
	for _, p := range procs {
		p.term(t)
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

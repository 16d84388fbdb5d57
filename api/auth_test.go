package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/lmc-consent/consentd/audit"
	"github.com/lmc-consent/consentd/pki"
	clusterv1 "github.com/lmc-consent/consentd/proto/cluster/v1"
	consentv1 "github.com/lmc-consent/consentd/proto/consent/v1"
)

const testCluster = "test"

// tlsWorld is a CA, an API server on mutual TLS with node t1's certificate,
// and clients holding each role's certificate.
type tlsWorld struct {
	t      *testing.T
	dir    string
	ca     *pki.CA
	h      *harness
	pool   *x509.CertPool
	access *audit.Log
}

func writeLeaf(t *testing.T, dir, name string, l pki.Leaf) {
	t.Helper()
	os.WriteFile(filepath.Join(dir, name+".pem"), l.CertPEM, 0o600)
	os.WriteFile(filepath.Join(dir, name+"-key.pem"), l.KeyPEM, 0o600)
}

func newTLSWorld(t *testing.T) *tlsWorld {
	t.Helper()
	return newTLSWorldWith(t)
}

func newTLSWorldWith(t *testing.T, tweak ...func(*Config)) *tlsWorld {
	t.Helper()
	ca, err := pki.NewCA(testCluster, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ca.pem"), ca.PEM, 0o600)
	node, err := ca.IssueNode(testCluster, "t1", []string{"127.0.0.1"}, pki.IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	writeLeaf(t, dir, "t1", node)
	for _, c := range []struct {
		name, org string
		role      pki.Role
	}{
		{"practice-a", "Y00001", pki.RolePractice}, {"practice-b", "Y00002", pki.RolePractice},
		{"reader", "RR801", pki.RoleReader}, {"admin", "LMC01", pki.RoleLMCAdmin}, {"auditor", "LMC01", pki.RoleAuditor},
	} {
		l, err := ca.IssueCaller(testCluster, c.org, c.role, "user-"+c.name, pki.IssueOptions{})
		if err != nil {
			t.Fatal(err)
		}
		writeLeaf(t, dir, c.name, l)
	}
	src, err := pki.NewSource(pki.Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "t1.pem"), Key: filepath.Join(dir, "t1-key.pem")}, testCluster, nil)
	if err != nil {
		t.Fatal(err)
	}
	access, err := audit.Open(audit.Config{Dir: filepath.Join(dir, "access"), Node: "t1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { access.Close() })
	h := newHarness(t, fakeBackend, append([]func(*Config){func(c *Config) { c.Insecure, c.TLS, c.AccessLog = false, src, access }}, tweak...)...)
	h.base = "https://" + h.srv.HTTPAddr()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.PEM)
	return &tlsWorld{t: t, dir: dir, ca: ca, h: h, pool: pool, access: access}
}

func (w *tlsWorld) clientTLS(name string) *tls.Config {
	w.t.Helper()
	c := &tls.Config{RootCAs: w.pool, MinVersion: tls.VersionTLS12}
	if name != "" {
		cert, err := tls.LoadX509KeyPair(filepath.Join(w.dir, name+".pem"), filepath.Join(w.dir, name+"-key.pem"))
		if err != nil {
			w.t.Fatal(err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c
}

// restResp calls the REST API holding name's certificate ("" for none).
func (w *tlsWorld) restResp(name, method, path, body string, header ...string) *http.Response {
	w.t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: w.clientTLS(name)}}
	defer client.CloseIdleConnections()
	req, _ := http.NewRequest(method, w.h.base+path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		return &http.Response{StatusCode: -1, Body: io.NopCloser(strings.NewReader(err.Error()))}
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(raw))
	return resp
}

// rest is restResp with the body decoded.
func (w *tlsWorld) rest(name, method, path, body string, header ...string) restReply {
	w.t.Helper()
	resp := w.restResp(name, method, path, body, header...)
	raw, _ := io.ReadAll(resp.Body)
	r := restReply{code: resp.StatusCode, raw: raw}
	json.Unmarshal(raw, &r.body)
	return r
}

func (w *tlsWorld) grpc(name string) *grpc.ClientConn {
	w.t.Helper()
	cc, err := grpc.NewClient(w.h.srv.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(w.clientTLS(name))))
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { cc.Close() })
	return cc
}

func TestAuthorisationOverRESTAndGRPC(t *testing.T) {
	w := newTLSWorld(t)
	restricted := `{"kind":"scr","state":"dissent","channel":"in_person","decisionMaker":{"type":"patient"},"requestId":"a-1","reason":"safeguarding","restricted":true}`
	rec := w.rest("practice-a", "POST", recordPath(patient), restricted)
	if rec.code != 200 {
		t.Fatalf("practice record: %d %s", rec.code, rec.raw)
	}
	by := rec.object("decision")["recordedBy"].(map[string]any)
	if by["odsCode"] != "Y00001" || by["userId"] != "user-practice-a" || by["role"] != "practice" {
		t.Fatalf("recordedBy %v, want the caller's certificate", by)
	}
	applies, _, _ := w.h.fake.counts()

	for _, tc := range []struct {
		name, who, method, path, body string
		header                        []string
		code                          int
	}{
		{"practice A cannot set recordedBy in the body", "practice-a", "POST", recordPath(patient),
			`{"kind":"scr","state":"dissent","channel":"in_person","decisionMaker":{"type":"patient"},"recordedBy":{"odsCode":"Y00002"}}`, nil, 400},
		{"reader may not write", "reader", "POST", recordPath(patient), goodBody, nil, 403},
		{"auditor may not write", "auditor", "POST", recordPath(patient), goodBody, nil, 403},
		{"no certificate", "", "POST", recordPath(patient), goodBody, nil, 401},
		{"no certificate, forged identity header", "", "POST", recordPath(patient), goodBody,
			[]string{"Grpc-Metadata-X-Consentd-Identity", "org=Y00001&role=practice&subject=x"}, 401},
		{"reader with a forged practice identity header", "reader", "POST", recordPath(patient), goodBody,
			[]string{"Grpc-Metadata-X-Consentd-Identity", "org=Y00001&role=practice&subject=x"}, 403},
		{"practice may not add members", "practice-a", "POST", "/v1/cluster/members",
			`{"id":"n9","raftAddr":"10.0.0.9:7081","grpcAddr":"10.0.0.9:9081","httpAddr":"10.0.0.9:8081"}`, nil, 403},
		{"practice may not remove members", "practice-a", "DELETE", "/v1/cluster/members/n2", "", nil, 403},
		{"metrics need a certificate", "", "GET", "/metrics", "", nil, 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := w.rest(tc.who, tc.method, tc.path, tc.body, tc.header...)
			if got.code != tc.code {
				t.Fatalf("%d %s, want %d", got.code, got.raw, tc.code)
			}
		})
	}
	if now, _, _ := w.h.fake.counts(); now != applies {
		t.Fatalf("refused requests reached the cluster: %d applies, want %d", now, applies)
	}
	// The fake cluster has no n2: a 404 shows the call got past authorisation.
	if got := w.rest("admin", "DELETE", "/v1/cluster/members/n2", ""); got.code != 404 {
		t.Fatalf("lmc_admin remove member: %d %s", got.code, got.raw)
	}
	if got := w.rest("", "GET", "/livez", ""); got.code != 200 {
		t.Fatalf("livez without a certificate: %d", got.code)
	}

	// Restricted reasons: the auditor and the recording organisation only,
	// whatever headers a reader sends.
	for who, want := range map[string]string{"auditor": "safeguarding", "practice-a": "safeguarding", "practice-b": "", "reader": ""} {
		got := w.rest(who, "GET", "/v1/patients/"+patient+"/decisions", "",
			"Grpc-Metadata-X-Consentd-Identity", "org=LMC01&role=auditor&subject=x")
		if got.code != 200 {
			t.Fatalf("%s history: %d %s", who, got.code, got.raw)
		}
		if r := got.list("decisions")[0].(map[string]any)["reason"]; r != want {
			t.Errorf("%s sees reason %q, want %q", who, r, want)
		}
	}
}

func TestGRPCIdentityComesFromTheCertificateOnly(t *testing.T) {
	w := newTLSWorld(t)
	reader := consentv1.NewConsentServiceClient(w.grpc("reader"))
	// Metadata claiming another identity is ignored on the network listener.
	ctx := metadata.AppendToOutgoingContext(context.Background(), identityKey, "org=Y00001&role=practice&subject=x")
	_, err := reader.RecordDecision(ctx, &consentv1.RecordDecisionRequest{NhsNumber: patient, Kind: "scr", State: "dissent",
		Channel: "in_person", DecisionMaker: &consentv1.DecisionMaker{Type: "patient"}})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("reader writing with forged metadata: %v", err)
	}
	if _, err := reader.GetConsents(context.Background(), &consentv1.GetConsentsRequest{NhsNumber: patient}); err != nil {
		t.Fatalf("reader read: %v", err)
	}
	node := consentv1.NewConsentServiceClient(w.grpc("t1"))
	if _, err := node.GetConsents(context.Background(), &consentv1.GetConsentsRequest{NhsNumber: patient}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a node certificate used as a caller's: %v", err)
	}
	practice := consentv1.NewConsentServiceClient(w.grpc("practice-b"))
	resp, err := practice.RecordDecision(context.Background(), &consentv1.RecordDecisionRequest{NhsNumber: patient, Kind: "scr", State: "dissent",
		Channel: "in_person", DecisionMaker: &consentv1.DecisionMaker{Type: "patient"}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetDecision().GetRecordedBy().GetOdsCode() != "Y00002" {
		t.Fatalf("recorded by %v", resp.GetDecision().GetRecordedBy())
	}
}

func TestHandshakeRefusals(t *testing.T) {
	w := newTLSWorld(t)
	other, _ := pki.NewCA(testCluster, time.Hour)
	foreign, _ := other.IssueCaller(testCluster, "Y00001", pki.RolePractice, "mallory", pki.IssueOptions{})
	writeLeaf(t, w.dir, "foreign", foreign)
	expired, _ := w.ca.IssueCaller(testCluster, "Y00001", pki.RolePractice, "late", pki.IssueOptions{
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	writeLeaf(t, w.dir, "expired", expired)
	for _, who := range []string{"foreign", "expired"} {
		if got := w.rest(who, "GET", "/v1/patients/"+patient+"/consents", ""); got.code != -1 && got.code != 401 {
			t.Errorf("%s certificate over REST: %d %s", who, got.code, got.raw)
		}
		c := consentv1.NewConsentServiceClient(w.grpc(who))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.GetConsents(ctx, &consentv1.GetConsentsRequest{NhsNumber: patient})
		cancel()
		if err == nil {
			t.Errorf("%s certificate accepted over gRPC", who)
		}
	}
}

func TestAllowedTable(t *testing.T) {
	practice := pki.Identity{Org: "Y00001", Role: pki.RolePractice, Subject: "u"}
	node := pki.Identity{NodeID: "n2"}
	for _, tc := range []struct {
		name   string
		id     pki.Identity
		method string
		req    any
		ok     bool
	}{
		{"caller on the peer service", practice, "/consentd.cluster.v1.PeerService/Apply", nil, false},
		{"node on the peer service", node, "/consentd.cluster.v1.PeerService/Apply", nil, true},
		{"node joins as itself", node, "/consentd.cluster.v1.PeerService/Join", &clusterv1.JoinRequest{Id: "n2"}, true},
		{"node joins as another", node, "/consentd.cluster.v1.PeerService/Join", &clusterv1.JoinRequest{Id: "n1"}, false},
		{"node on the public API", node, "/consent.v1.ConsentService/GetConsents", nil, false},
		{"practice records", practice, "/consent.v1.ConsentService/RecordDecision", nil, true},
		{"practice records a batch", practice, "/consent.v1.ConsentService/RecordDecisions", nil, true},
		{"reader records a batch", pki.Identity{Org: "RR801", Role: pki.RoleReader}, "/consent.v1.ConsentService/RecordDecisions", nil, false},
		{"practice corrects", practice, "/consent.v1.ConsentService/MarkEnteredInError", nil, false},
		{"admin corrects", pki.Identity{Org: "LMC01", Role: pki.RoleLMCAdmin}, "/consent.v1.ConsentService/MarkEnteredInError", nil, true},
		{"unknown method", practice, "/consent.v1.ConsentService/DropEverything", nil, false},
	} {
		if err := allowed(tc.id, tc.method, tc.req); (err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// TestAccessLog: every access to a patient's consent, allowed or denied,
// is in the node's access log before it happens; only auditors read the
// log; a log that cannot be written refuses the access.
func TestAccessLog(t *testing.T) {
	w := newTLSWorld(t)
	if got := w.rest("practice-a", "POST", recordPath(patient), goodBody); got.code != 200 {
		t.Fatalf("record: %d %s", got.code, got.raw)
	}
	if got := w.rest("reader", "POST", recordPath(patient), goodBody); got.code != 403 {
		t.Fatalf("reader record: %d %s", got.code, got.raw)
	}
	if got := w.rest("reader", "GET", "/v1/patients/"+patient+"/consents", ""); got.code != 200 {
		t.Fatalf("reader read: %d %s", got.code, got.raw)
	}
	if got := w.rest("reader", "GET", "/v1/audit/access", ""); got.code != 403 {
		t.Fatalf("reader reading the access log: %d %s", got.code, got.raw)
	}
	got := w.rest("auditor", "GET", "/v1/audit/access?nhsNumber="+patient, "")
	if got.code != 200 {
		t.Fatalf("auditor: %d %s", got.code, got.raw)
	}
	var seen []string
	for _, e := range got.list("entries") {
		m := e.(map[string]any)
		c := m["caller"].(map[string]any)
		seen = append(seen, fmt.Sprintf("%s %s/%s %s %s %s", m["operation"], c["org"], c["role"], m["outcome"], m["code"], m["transport"]))
	}
	want := []string{
		"write Y00001/practice allowed OK rest",
		"write RR801/reader denied PermissionDenied rest",
		"read RR801/reader allowed OK rest",
		"audit LMC01/auditor allowed OK rest", // the auditor's own query is logged too
	}
	if strings.Join(seen, "\n") != strings.Join(want, "\n") {
		t.Fatalf("access log for the patient:\n%s\nwant:\n%s", strings.Join(seen, "\n"), strings.Join(want, "\n"))
	}
	if got.body["node"] != "t1" {
		t.Fatalf("node %v", got.body["node"])
	}

	// The log can no longer be written: accesses are refused, nothing applied.
	applies, _, _ := w.h.fake.counts()
	w.access.Close()
	if got := w.rest("practice-a", "POST", recordPath(patient), `{"kind":"scr","state":"consent_core","channel":"in_person","decisionMaker":{"type":"patient"},"requestId":"after-close"}`); got.code != 503 {
		t.Fatalf("record with the access log down: %d %s", got.code, got.raw)
	}
	if got := w.rest("reader", "GET", "/v1/patients/"+patient+"/consents", ""); got.code != 503 {
		t.Fatalf("read with the access log down: %d %s", got.code, got.raw)
	}
	if now, _, _ := w.h.fake.counts(); now != applies {
		t.Fatal("a write went through without an access log entry")
	}
}

// TestReadsWaitForTheAccessLog: a read's access-log entry is written while
// its read barrier runs, but the register is read only once the entry is
// on disk; when it cannot be written, every kind of read, linearizable or
// stale, is refused without reading the register.
func TestReadsWaitForTheAccessLog(t *testing.T) {
	w := newTLSWorld(t)
	queries := func() int {
		w.h.reg.mu.Lock()
		defer w.h.reg.mu.Unlock()
		return w.h.reg.queries
	}
	reads := []struct{ method, path, body string }{
		{"GET", "/v1/patients/" + patient + "/consents", ""},
		{"GET", "/v1/patients/" + patient + "/consents?consistency=stale", ""},
		{"GET", "/v1/patients/" + patient + "/decisions", ""},
		{"GET", "/v1/patients/" + patient + "/decisions?consistency=stale", ""},
		{"POST", "/v1/consents:check", `{"kind":"scr","nhsNumbers":["` + patient + `"]}`},
		{"POST", "/v1/consents:check", `{"kind":"scr","nhsNumbers":["` + patient + `"],"consistency":"stale"}`},
	}
	for _, r := range reads {
		before := queries()
		if got := w.rest("reader", r.method, r.path, r.body); got.code != 200 {
			t.Fatalf("%s %s: %d %s", r.method, r.path, got.code, got.raw)
		}
		if queries() == before {
			t.Fatalf("%s %s did not read the register: the test would prove nothing", r.method, r.path)
		}
	}
	logged, _, err := w.access.Query(context.Background(), audit.Filter{NHSNumber: patient})
	if err != nil || len(logged) != len(reads) {
		t.Fatalf("%d access-log entries for %d reads (%v)", len(logged), len(reads), err)
	}
	w.access.Close()
	before := queries()
	for _, r := range reads {
		if got := w.rest("reader", r.method, r.path, r.body); got.code != 503 {
			t.Errorf("%s %s with the access log down: %d %s, want 503", r.method, r.path, got.code, got.raw)
		}
	}
	if n := queries() - before; n != 0 {
		t.Fatalf("the register was read %d times for reads whose access-log entry was never written", n)
	}
}

// TestAccessLogRemoteIsNotTheClientsSaySo: a REST client's own
// X-Forwarded-For does not become the remote address in the access log.
func TestAccessLogRemoteIsNotTheClientsSaySo(t *testing.T) {
	w := newTLSWorld(t)
	if got := w.rest("reader", "GET", "/v1/patients/"+patient+"/consents", "", "X-Forwarded-For", "203.0.113.9"); got.code != 200 {
		t.Fatalf("read: %d %s", got.code, got.raw)
	}
	entries, _, err := w.access.Query(context.Background(), audit.Filter{NHSNumber: patient})
	if err != nil || len(entries) != 1 {
		t.Fatalf("%v %v", entries, err)
	}
	if r := entries[0].Remote; r != "127.0.0.1" {
		t.Fatalf("remote %q, want the address the node saw", r)
	}
}

// TestAccessNotLogged: a call whose access entry could not be confirmed is
// refused either way, but only a failing log is an ERROR; a caller that
// hung up is not, so a load tool stopping does not bury a real failure.
func TestAccessNotLogged(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	for _, tc := range []struct {
		name  string
		ctx   context.Context
		err   error
		code  codes.Code
		level string
	}{
		{"caller hung up", cancelled, fmt.Errorf("audit: waiting for the entry to be durable: %w", context.Canceled), codes.Canceled, "level=DEBUG"},
		{"caller out of time", expired, fmt.Errorf("audit: waiting for the entry to be durable: %w", context.DeadlineExceeded), codes.DeadlineExceeded, "level=WARN"},
		{"disk failed", context.Background(), errors.New("audit: write: input/output error"), codes.Unavailable, "level=ERROR"},
		// A context error the caller's own context does not explain came
		// from the log itself: that is the log failing.
		{"log's own timeout", context.Background(), fmt.Errorf("audit: sync: %w", context.DeadlineExceeded), codes.DeadlineExceeded, "level=ERROR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf logBuffer
			s := &Server{log: buf.logger()}
			err := s.accessNotLogged(tc.ctx, "/consent.v1.ConsentService/GetConsents", tc.err)
			if got := status.Code(err); got != tc.code {
				t.Fatalf("code %v, want %v (%v)", got, tc.code, err)
			}
			if out := buf.String(); !strings.Contains(out, tc.level) || strings.Count(out, "level=") != 1 {
				t.Fatalf("logged %q, want one record at %s", out, tc.level)
			}
		})
	}
}

// The profiler shows a node's internals: absent unless asked for, and
// for LMC administrators only on TLS.
func TestPprofIsOptInAndNeedsACertificate(t *testing.T) {
	off := newTLSWorld(t)
	if got := off.rest("admin", "GET", "/debug/pprof/", ""); got.code != 404 {
		t.Fatalf("pprof without Config.Pprof: %d, want 404", got.code)
	}
	on := newTLSWorldWith(t, func(c *Config) { c.Pprof = true })
	for _, tc := range []struct {
		who  string
		code int
	}{{"", 401}, {"reader", 403}, {"practice-a", 403}, {"admin", 200}} {
		if got := on.rest(tc.who, "GET", "/debug/pprof/", ""); got.code != tc.code {
			t.Errorf("pprof as %q: %d %s, want %d", tc.who, got.code, got.raw, tc.code)
		}
	}
}

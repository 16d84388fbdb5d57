package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/lmc-consent/consentd/cluster"
	"github.com/lmc-consent/consentd/fsm"
	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
	consentv1 "github.com/lmc-consent/consentd/proto/consent/v1"
	"github.com/lmc-consent/consentd/raftnode"
)

// fakeCluster applies commands straight to a real register, and can be told
// to fail the way a real cluster does.
type fakeCluster struct {
	mu       sync.Mutex
	store    *fsm.Store
	index    uint64
	applies  int
	applyErr error
	readErr  error
	reads    int
}

func (f *fakeCluster) NodeID() string { return "t1" }

func (f *fakeCluster) Apply(ctx context.Context, cmd []byte) (*commandv1.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applies++
	if f.applyErr != nil {
		return nil, f.applyErr
	}
	f.index++
	return f.store.Apply([]uint64{f.index}, [][]byte{cmd})[0].(*commandv1.Result), nil
}

func (f *fakeCluster) LinearizableRead(ctx context.Context) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	return f.index, f.readErr
}

func (f *fakeCluster) StaleInfo() (uint64, time.Duration) { return 41, 1500 * time.Millisecond }

func (f *fakeCluster) Status(ctx context.Context) (*consentv1.GetStatusResponse, error) {
	return &consentv1.GetStatusResponse{Id: "t1", State: "leader", LeaderId: "t1"}, nil
}

func (f *fakeCluster) AddMember(ctx context.Context, req *consentv1.AddMemberRequest) error {
	return nil
}
func (f *fakeCluster) RemoveMember(ctx context.Context, id string) error {
	if id != "t2" {
		return cluster.ErrMemberNotFound
	}
	return nil
}

func (f *fakeCluster) set(applyErr, readErr error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applyErr, f.readErr = applyErr, readErr
}

func (f *fakeCluster) applyCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applies
}

type harness struct {
	t    *testing.T
	srv  *Server
	fake *fakeCluster
	base string
	rpc  consentv1.ConsentServiceClient
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	store, err := fsm.Open(fsm.Config{Path: filepath.Join(t.TempDir(), "r.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	fake := &fakeCluster{store: store}
	srv, err := New(Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Insecure: true, Version: "test"}, store, fake)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	cc, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return &harness{t: t, srv: srv, fake: fake, base: "http://" + srv.HTTPAddr(), rpc: consentv1.NewConsentServiceClient(cc)}
}

func (h *harness) do(method, path, body string, header ...string) (int, map[string]any) {
	h.t.Helper()
	req, err := http.NewRequest(method, h.base+path, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(raw) > 0 && json.Unmarshal(raw, &out) != nil {
		out = map[string]any{"raw": string(raw)}
	}
	return resp.StatusCode, out
}

const patient = "9990000018"

const goodBody = `{"kind":"scr","state":"dissent","channel":"in_person","decisionMaker":{"type":"patient"},"requestId":"r-1"}`

func TestRecordThenReadOverREST(t *testing.T) {
	h := newHarness(t)
	code, rec := h.do("POST", "/v1/patients/"+patient+"/decisions", goodBody)
	if code != 200 {
		t.Fatalf("record: %d %v", code, rec)
	}
	dec := rec["decision"].(map[string]any)
	for _, field := range []string{"id", "recordedAt", "revision", "version", "nhsNumber", "requestId", "acceptedBy"} {
		if _, ok := dec[field]; !ok {
			t.Errorf("decision lacks %s: %v", field, dec)
		}
	}
	if dec["version"] != "1" || dec["kind"] != "scr" || dec["state"] != "dissent" || rec["changed"] != true {
		t.Errorf("record response %v", rec)
	}
	if dec["recordedBy"].(map[string]any)["role"] != "unauthenticated" {
		t.Errorf("recordedBy must come from the caller, got %v", dec["recordedBy"])
	}
	code, got := h.do("GET", "/v1/patients/"+patient+"/consents", "")
	if code != 200 || got["nhsNumber"] != patient || got["revision"] != "1" {
		t.Fatalf("read: %d %v", code, got)
	}
	consents := got["consents"].([]any)
	if len(consents) != len(fsm.Kinds()) {
		t.Fatalf("%d kinds, want every kind", len(consents))
	}
	first := consents[0].(map[string]any)
	if first["kind"] != "scr" || first["state"] != "dissent" || first["version"] != "1" {
		t.Fatalf("scr %v", first)
	}
	if got["read"].(map[string]any)["consistency"] != "linearizable" {
		t.Fatalf("default read not labelled linearizable: %v", got["read"])
	}
	code, hist := h.do("GET", "/v1/patients/"+patient+"/decisions?kind=scr&pageSize=10", "")
	if code != 200 || len(hist["decisions"].([]any)) != 1 {
		t.Fatalf("history %d %v", code, hist)
	}
}

func TestUnknownPatientGetsDefaults(t *testing.T) {
	h := newHarness(t)
	code, got := h.do("GET", "/v1/patients/9000000009/consents", "")
	if code != 200 {
		t.Fatalf("unknown patient: %d", code)
	}
	for i, c := range got["consents"].([]any) {
		m := c.(map[string]any)
		if m["version"] != "0" || m["state"] != fsm.Kinds()[i].DefaultState {
			t.Errorf("%v, want default at version 0", m)
		}
	}
}

func TestBadInputIsRefusedAndNothingApplied(t *testing.T) {
	h := newHarness(t)
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	for _, tc := range []struct {
		name, path, body, field string
		code                    int
	}{
		{"wrong check digit", "/v1/patients/9990000017/decisions", goodBody, "nhs_number", 400},
		{"letters", "/v1/patients/99900000AB/decisions", goodBody, "nhs_number", 400},
		{"unknown kind", "/v1/patients/" + patient + "/decisions", `{"kind":"ndop","state":"dissent","channel":"phone"}`, "kind", 400},
		{"unknown state", "/v1/patients/" + patient + "/decisions", `{"kind":"scr","state":"maybe","channel":"phone"}`, "state", 400},
		{"future effectiveFrom", "/v1/patients/" + patient + "/decisions", `{"kind":"scr","state":"dissent","channel":"phone","effectiveFrom":"` + future + `"}`, "effective_from", 400},
		{"unknown channel", "/v1/patients/" + patient + "/decisions", `{"kind":"scr","state":"dissent","channel":"fax"}`, "channel", 400},
		{"unknown JSON field", "/v1/patients/" + patient + "/decisions", `{"kind":"scr","state":"dissent","channel":"phone","odsCode":"X"}`, "odsCode", 400},
		{"malformed JSON", "/v1/patients/" + patient + "/decisions", `{"kind":`, "", 400},
		{"oversized body", "/v1/patients/" + patient + "/decisions", `{"reason":"` + strings.Repeat("x", 70<<10) + `"}`, "", 413},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := h.fake.applyCount()
			code, body := h.do("POST", tc.path, tc.body)
			if code != tc.code {
				t.Fatalf("status %d, want %d: %v", code, tc.code, body)
			}
			if tc.field != "" && !strings.Contains(fmt.Sprint(body), tc.field) {
				t.Fatalf("error does not name %s: %v", tc.field, body)
			}
			if _, ok := body["message"]; !ok {
				t.Fatalf("error body is not {code,message,details}: %v", body)
			}
			if h.fake.applyCount() != before {
				t.Fatal("invalid input reached the cluster")
			}
		})
	}
}

func TestCheckConsentsBatchLimits(t *testing.T) {
	h := newHarness(t)
	nums := make([]string, 1001)
	for i := range nums {
		nums[i] = patient
	}
	b, _ := json.Marshal(map[string]any{"kind": "scr", "nhsNumbers": nums})
	if code, body := h.do("POST", "/v1/consents:check", string(b)); code != 400 || !strings.Contains(fmt.Sprint(body), "nhs_numbers") {
		t.Fatalf("1001 numbers: %d %v", code, body)
	}
	b, _ = json.Marshal(map[string]any{"kind": "scr", "nhsNumbers": nums[:1000]})
	if code, body := h.do("POST", "/v1/consents:check", string(b)); code != 200 || len(body["results"].([]any)) != 1000 {
		t.Fatalf("1000 numbers: %d", code)
	}
	if code, body := h.do("POST", "/v1/consents:check", `{"kind":"scr","nhsNumbers":["9990000018","123"]}`); code != 400 || !strings.Contains(fmt.Sprint(body), "nhs_numbers[1]") {
		t.Fatalf("bad number in batch: %d %v", code, body)
	}
}

func TestRequestIDFromHeader(t *testing.T) {
	h := newHarness(t)
	body := `{"kind":"scr","state":"dissent","channel":"phone"}`
	code, rec := h.do("POST", "/v1/patients/"+patient+"/decisions", body, "X-Request-ID", "hdr-1")
	if code != 200 || rec["decision"].(map[string]any)["requestId"] != "hdr-1" {
		t.Fatalf("header request id: %d %v", code, rec)
	}
	code, again := h.do("POST", "/v1/patients/"+patient+"/decisions", body, "X-Request-ID", "hdr-1")
	if code != 200 || again["duplicate"] != true {
		t.Fatalf("retry with the same header: %d %v", code, again)
	}
	code, conflict := h.do("POST", "/v1/patients/"+patient+"/decisions", `{"kind":"scr","state":"dissent","channel":"phone","requestId":"body-1"}`, "X-Request-ID", "hdr-2")
	if code != 400 || !strings.Contains(fmt.Sprint(conflict), "request_id") {
		t.Fatalf("body and header disagree: %d %v", code, conflict)
	}
	code, reuse := h.do("POST", "/v1/patients/"+patient+"/decisions", `{"kind":"scr","state":"consent_core","channel":"phone"}`, "X-Request-ID", "hdr-1")
	if code != 409 {
		t.Fatalf("request id reused with other content: %d %v", code, reuse)
	}
}

func TestVersionMismatchIs409(t *testing.T) {
	h := newHarness(t)
	h.do("POST", "/v1/patients/"+patient+"/decisions", goodBody)
	code, body := h.do("POST", "/v1/patients/"+patient+"/decisions", `{"kind":"scr","state":"consent_core","channel":"phone","expectedVersion":"0"}`)
	if code != 409 || !strings.Contains(fmt.Sprint(body), "expected_version") {
		t.Fatalf("stale expectedVersion: %d %v", code, body)
	}
}

func TestClusterFailuresAreUnavailableNotFailures(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct {
		name     string
		err      error
		http     int
		grpc     codes.Code
		contains string
	}{
		{"leadership lost", fmt.Errorf("%w: leadership lost", raftnode.ErrOutcomeUnknown), 503, codes.Unavailable, "outcome unknown"},
		{"timeout after proposing", fmt.Errorf("%w: %w", raftnode.ErrOutcomeUnknown, context.DeadlineExceeded), 504, codes.DeadlineExceeded, "outcome unknown"},
		{"not leader", raftnode.ErrNotLeader, 503, codes.Unavailable, "leader"},
		{"no leader", cluster.ErrNoLeader, 503, codes.Unavailable, "leader"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.fake.set(tc.err, nil)
			defer h.fake.set(nil, nil)
			code, body := h.do("POST", "/v1/patients/"+patient+"/decisions", goodBody)
			if code != tc.http || !strings.Contains(fmt.Sprint(body["message"]), tc.contains) {
				t.Fatalf("REST: %d %v", code, body)
			}
			_, err := h.rpc.RecordDecision(context.Background(), &consentv1.RecordDecisionRequest{
				NhsNumber: patient, Kind: "scr", State: "dissent", Channel: "phone", RequestId: "g-" + strings.ReplaceAll(tc.name, " ", "-")})
			if status.Code(err) != tc.grpc {
				t.Fatalf("gRPC: %v, want %s", err, tc.grpc)
			}
		})
	}
}

func TestReadsWithoutQuorumRefuseUnlessStale(t *testing.T) {
	h := newHarness(t)
	h.fake.set(nil, fmt.Errorf("%w: partitioned", cluster.ErrNoLeader))
	if code, _ := h.do("GET", "/v1/patients/"+patient+"/consents", ""); code != 503 {
		t.Fatalf("linearizable read without quorum: %d", code)
	}
	if code, _ := h.do("GET", "/readyz", ""); code != 503 {
		t.Fatalf("readyz without quorum: %d", code)
	}
	code, body := h.do("GET", "/v1/patients/"+patient+"/consents?consistency=stale", "")
	if code != 200 {
		t.Fatalf("stale read: %d", code)
	}
	read := body["read"].(map[string]any)
	if read["consistency"] != "stale" || read["knownCommitIndex"] != "41" || read["sinceLeaderContactMs"] != "1500" {
		t.Fatalf("stale read not labelled: %v", read)
	}
	if code, body := h.do("GET", "/v1/patients/"+patient+"/consents?consistency=bogus", ""); code != 400 || !strings.Contains(fmt.Sprint(body), "consistency") {
		t.Fatalf("bogus consistency: %d %v", code, body)
	}
	h.fake.set(nil, nil)
	if code, _ := h.do("GET", "/readyz", ""); code != 200 {
		t.Fatalf("readyz with quorum: %d", code)
	}
}

func TestOperationalEndpoints(t *testing.T) {
	h := newHarness(t)
	if code, _ := h.do("GET", "/livez", ""); code != 200 {
		t.Fatalf("livez %d", code)
	}
	code, doc := h.do("GET", "/v1/openapi.json", "")
	if code != 200 || doc["swagger"] != "2.0" {
		t.Fatalf("openapi %d", code)
	}
	code, kinds := h.do("GET", "/v1/kinds", "")
	if code != 200 || len(kinds["kinds"].([]any)) != 3 {
		t.Fatalf("kinds %d %v", code, kinds)
	}
	code, st := h.do("GET", "/v1/cluster/status", "")
	if code != 200 || st["insecure"] != true || st["stateDigest"] == "" || st["version"] != "test" {
		t.Fatalf("status %d %v", code, st)
	}
	if code, _ := h.do("DELETE", "/v1/cluster/members/nope", ""); code != 404 {
		t.Fatalf("remove unknown member: %d", code)
	}
	if code, body := h.do("POST", "/v1/cluster/members", `{"id":"n4","raftAddr":"nohost"}`); code != 400 || !strings.Contains(fmt.Sprint(body), "raft_addr") {
		t.Fatalf("add member with bad address: %d %v", code, body)
	}
	// A REST call goes through the gRPC interceptors: the counter sees it.
	h.do("GET", "/v1/patients/"+patient+"/consents", "")
	req, _ := http.NewRequest("GET", h.base+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(raw, []byte(`consentd_api_requests_total{code="OK",method="/consent.v1.ConsentService/GetConsents"}`)) {
		t.Fatalf("REST request not counted by the gRPC interceptor:\n%s", raw)
	}
}

func TestErrorTable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{&fsm.FieldError{Field: "kind", Msg: "unknown"}, codes.InvalidArgument},
		{fmt.Errorf("apply: %w", fsm.ErrVersionMismatch), codes.Aborted},
		{fsm.ErrRequestConflict, codes.Aborted},
		{&fsm.FieldError{Field: "decision_id", Err: fsm.ErrNotFound}, codes.NotFound},
		{cluster.ErrMemberNotFound, codes.NotFound},
		{fmt.Errorf("x: %w", raftnode.ErrOutcomeUnknown), codes.Unavailable},
		{fmt.Errorf("%w: %w", raftnode.ErrOutcomeUnknown, context.DeadlineExceeded), codes.DeadlineExceeded},
		{raftnode.ErrNotLeader, codes.Unavailable},
		{raftnode.ErrNotReady, codes.Unavailable},
		{raftnode.ErrShutdown, codes.Unavailable},
		{cluster.ErrNoLeader, codes.Unavailable},
		{cluster.ErrForward, codes.Unavailable},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{context.Canceled, codes.Canceled},
		{status.Error(codes.PermissionDenied, "no"), codes.PermissionDenied},
		{errors.New("disk on fire"), codes.Internal},
	} {
		if got := toStatus(newTestLogger(), tc.err).Code(); got != tc.want {
			t.Errorf("%v → %s, want %s", tc.err, got, tc.want)
		}
	}
	st := toStatus(newTestLogger(), errors.New("secret detail"))
	if strings.Contains(st.Message(), "secret") {
		t.Error("internal error detail leaked to the caller")
	}
}

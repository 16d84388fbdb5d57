package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/lmc-consent/consentd/cluster"
	"github.com/lmc-consent/consentd/fsm"
	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
	consentv1 "github.com/lmc-consent/consentd/proto/consent/v1"
)

// The real implementations must satisfy the interfaces declared here.
var (
	_ Register = (*fsm.Store)(nil)
	_ Cluster  = (*cluster.Cluster)(nil)
)

// fakeRegister is an in-memory register good enough to drive the API:
// versions, compare-and-set, request-id replay, entered-in-error, paging.
type fakeRegister struct {
	mu        sync.Mutex
	applied   uint64
	current   map[[2]string]*commandv1.CurrentRecord
	decisions []*commandv1.DecisionRecord
	requests  map[string]fakeRequest
	queryErr  error
	panics    bool
	queries   int // reads of the register, of any kind
}

type fakeRequest struct {
	fingerprint string
	result      *commandv1.Result
}

func newFakeRegister() *fakeRegister {
	return &fakeRegister{current: map[[2]string]*commandv1.CurrentRecord{}, requests: map[string]fakeRequest{}}
}

func fail(code commandv1.Result_Code, field, msg string) *commandv1.Result {
	return &commandv1.Result{Code: code, Field: field, Message: msg}
}

func (r *fakeRegister) apply(idx uint64, b []byte) *commandv1.Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.applied = idx
	env, err := fsm.DecodeCommand(b)
	if err != nil {
		return fail(commandv1.Result_CODE_INVALID_ARGUMENT, "command", err.Error())
	}
	switch body := env.GetBody().(type) {
	case *commandv1.Envelope_RecordDecision:
		return r.record(idx, body.RecordDecision)
	case *commandv1.Envelope_MarkEnteredInError:
		return r.enteredInError(idx, body.MarkEnteredInError)
	case *commandv1.Envelope_RecordDecisions:
		return r.recordBatch(idx, body.RecordDecisions)
	}
	return fail(commandv1.Result_CODE_INVALID_ARGUMENT, "command", "not supported by the fake")
}

func (r *fakeRegister) replay(requestID, fingerprint string) (*commandv1.Result, bool) {
	prev, ok := r.requests[requestID]
	if !ok {
		return nil, false
	}
	if prev.fingerprint != fingerprint {
		return fail(commandv1.Result_CODE_REQUEST_CONFLICT, "request_id", "reused with different content"), true
	}
	res := proto.Clone(prev.result).(*commandv1.Result)
	res.Duplicate = true
	return res, true
}

func (r *fakeRegister) record(idx uint64, cmd *commandv1.RecordDecision) *commandv1.Result {
	if err := fsm.ValidateRecordDecision(cmd, time.Time{}); err != nil {
		var fe *fsm.FieldError
		errors.As(err, &fe)
		return fail(commandv1.Result_CODE_INVALID_ARGUMENT, fe.Field, fe.Msg)
	}
	fp := fakeFingerprint(cmd)
	if res, ok := r.replay(cmd.GetRequestId(), fp); ok {
		return res
	}
	key := [2]string{cmd.GetNhsNumber(), cmd.GetKind()}
	cur := r.current[key]
	if cmd.ExpectedVersion != nil && cmd.GetExpectedVersion() != cur.GetVersion() {
		return fail(commandv1.Result_CODE_VERSION_MISMATCH, "expected_version", "does not match the current version")
	}
	k, _ := fsm.LookupKind(cmd.GetKind())
	changed := cmd.GetState() != k.DefaultState
	if cur != nil {
		changed = cmd.GetState() != cur.GetState()
	}
	next := &commandv1.CurrentRecord{State: cmd.GetState(), Version: cur.GetVersion() + 1, DecisionId: cmd.GetDecisionId(),
		EffectiveFromMicros: cmd.GetEffectiveFromMicros(), RaftIndex: idx}
	r.current[key] = next
	rec := &commandv1.DecisionRecord{Decision: cmd, RaftIndex: idx, Version: next.GetVersion(), Changed: changed}
	r.decisions = append(r.decisions, rec)
	res := &commandv1.Result{Decision: rec, Current: next, Changed: changed, RaftIndex: idx}
	r.requests[cmd.GetRequestId()] = fakeRequest{fp, res}
	return res
}

func fakeFingerprint(cmd *commandv1.RecordDecision) string {
	return strings.Join([]string{cmd.GetNhsNumber(), cmd.GetKind(), cmd.GetState()}, "|")
}

// recordBatch is all or nothing, as the register: every item is checked
// before any is recorded.
func (r *fakeRegister) recordBatch(idx uint64, cmd *commandv1.RecordDecisions) *commandv1.Result {
	if err := fsm.ValidateRecordDecisions(cmd, time.Time{}); err != nil {
		var fe *fsm.FieldError
		errors.As(err, &fe)
		return fail(commandv1.Result_CODE_INVALID_ARGUMENT, fe.Field, fe.Msg)
	}
	for i, d := range cmd.GetDecisions() {
		prev, seen := r.requests[d.GetRequestId()]
		if seen && prev.fingerprint != fakeFingerprint(d) {
			return fail(commandv1.Result_CODE_REQUEST_CONFLICT, fmt.Sprintf("decisions[%d].request_id", i), "reused with different content")
		}
		if !seen && d.ExpectedVersion != nil && d.GetExpectedVersion() != r.current[[2]string{d.GetNhsNumber(), d.GetKind()}].GetVersion() {
			return fail(commandv1.Result_CODE_VERSION_MISMATCH, fmt.Sprintf("decisions[%d].expected_version", i), "does not match the current version")
		}
	}
	out := &commandv1.Result{RaftIndex: idx}
	for _, d := range cmd.GetDecisions() {
		out.Items = append(out.Items, r.record(idx, d))
	}
	return out
}

func (r *fakeRegister) enteredInError(idx uint64, cmd *commandv1.MarkEnteredInError) *commandv1.Result {
	fp := cmd.GetNhsNumber() + "|" + cmd.GetDecisionId()
	if res, ok := r.replay(cmd.GetRequestId(), fp); ok {
		return res
	}
	for _, rec := range r.decisions {
		d := rec.GetDecision()
		if d.GetDecisionId() != cmd.GetDecisionId() || d.GetNhsNumber() != cmd.GetNhsNumber() {
			continue
		}
		rec.EnteredInError = &commandv1.EnteredInError{RaftIndex: idx, RequestId: cmd.GetRequestId(), Reason: cmd.GetReason(),
			RecordedAtMicros: cmd.GetRecordedAtMicros(), RecordedBy: cmd.GetRecordedBy()}
		key := [2]string{d.GetNhsNumber(), d.GetKind()}
		version := r.current[key].GetVersion() + 1
		// The fake forgets earlier decisions: the kind goes back to its default.
		r.current[key] = &commandv1.CurrentRecord{Version: version, RaftIndex: idx, State: mustKind(d.GetKind()).DefaultState}
		res := &commandv1.Result{Decision: rec, Current: r.current[key], Changed: true, RaftIndex: idx}
		r.requests[cmd.GetRequestId()] = fakeRequest{fp, res}
		return res
	}
	return fail(commandv1.Result_CODE_NOT_FOUND, "decision_id", "no such decision for this patient")
}

func mustKind(name string) fsm.Kind {
	k, ok := fsm.LookupKind(name)
	if !ok {
		panic("unknown kind " + name)
	}
	return k
}

func (r *fakeRegister) consentOf(nhs, kind string) fsm.Consent {
	c := fsm.Consent{Kind: kind, State: mustKind(kind).DefaultState}
	if cur := r.current[[2]string{nhs, kind}]; cur != nil {
		c.State, c.Version, c.DecisionID = cur.GetState(), cur.GetVersion(), cur.GetDecisionId()
		if cur.GetEffectiveFromMicros() != 0 {
			c.EffectiveFrom = time.UnixMicro(cur.GetEffectiveFromMicros()).UTC()
		}
	}
	return c
}

func (r *fakeRegister) query() (uint64, error) {
	r.queries++
	if r.panics {
		panic("fake register told to panic")
	}
	return r.applied, r.queryErr
}

func (r *fakeRegister) GetConsents(nhs string) (uint64, []fsm.Consent, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rev, err := r.query()
	if err != nil {
		return 0, nil, err
	}
	var out []fsm.Consent
	for _, k := range fsm.Kinds() {
		out = append(out, r.consentOf(nhs, k.Name))
	}
	return rev, out, nil
}

func (r *fakeRegister) CheckConsents(kind string, nhs []string) (uint64, []fsm.CheckResult, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rev, err := r.query()
	if err != nil {
		return 0, nil, err
	}
	out := make([]fsm.CheckResult, len(nhs))
	for i, n := range nhs {
		c := r.consentOf(n, kind)
		out[i] = fsm.CheckResult{NHSNumber: n, State: c.State, Version: c.Version}
	}
	return rev, out, nil
}

func (r *fakeRegister) ListDecisions(nhs, kind string, after uint64, limit int) (uint64, []*commandv1.DecisionRecord, uint64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rev, err := r.query()
	if err != nil {
		return 0, nil, 0, err
	}
	var out []*commandv1.DecisionRecord
	for _, rec := range r.decisions {
		d := rec.GetDecision()
		if d.GetNhsNumber() != nhs || (kind != "" && d.GetKind() != kind) || rec.GetRaftIndex() <= after {
			continue
		}
		if len(out) == limit {
			return rev, out, out[len(out)-1].GetRaftIndex(), nil
		}
		out = append(out, proto.Clone(rec).(*commandv1.DecisionRecord))
	}
	return rev, out, 0, nil
}

func (r *fakeRegister) Digest() (uint64, string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rev, err := r.query()
	return rev, "fake-digest", err
}

func (r *fakeRegister) AppliedIndex() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.applied
}

func (r *fakeRegister) set(fn func(r *fakeRegister)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fn(r)
}

// fakeCluster applies commands straight to a register (fake or real) at
// increasing indexes, and can be told to fail the way a real cluster does.
type fakeCluster struct {
	apply func(idx uint64, cmd []byte) *commandv1.Result

	mu          sync.Mutex
	index       uint64
	applies     int
	lastCmd     []byte
	applyErr    error
	readErr     error
	readAhead   uint64 // a read index this far past what was applied
	reads       int
	deadlines   int // calls that arrived with a deadline
	applyGate   chan struct{}
	applyHeldUp chan struct{}
}

func (f *fakeCluster) NodeID() string { return "t1" }

func (f *fakeCluster) Apply(ctx context.Context, cmd []byte) (*commandv1.Result, error) {
	f.mu.Lock()
	gate, held := f.applyGate, f.applyHeldUp
	f.mu.Unlock()
	if gate != nil {
		close(held)
		<-gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applies++
	if _, ok := ctx.Deadline(); ok {
		f.deadlines++
	}
	if f.applyErr != nil {
		return nil, f.applyErr
	}
	f.index++
	f.lastCmd = cmd
	return f.apply(f.index, cmd), nil
}

func (f *fakeCluster) LinearizableRead(ctx context.Context) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	if _, ok := ctx.Deadline(); ok {
		f.deadlines++
	}
	if f.readErr != nil {
		return 0, f.readErr
	}
	return f.index + f.readAhead, nil
}

func (f *fakeCluster) StaleInfo() (uint64, time.Duration) { return 41, 1500 * time.Millisecond }
func (f *fakeCluster) Flush(context.Context) error        { return nil }

func (f *fakeCluster) Status(ctx context.Context) (*consentv1.GetStatusResponse, error) {
	return &consentv1.GetStatusResponse{Id: "t1", State: "leader", LeaderId: "t1",
		Members: []*consentv1.Member{{Id: "t1", Suffrage: "voter"}}}, nil
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

func (f *fakeCluster) set(fn func(f *fakeCluster)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeCluster) counts() (applies, reads, deadlines int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applies, f.reads, f.deadlines
}

func (f *fakeCluster) last() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastCmd
}

// backend is the register a harness runs against.
type backend string

const (
	fakeBackend backend = "fake"
	fsmBackend  backend = "fsm"
)

var backends = []backend{fakeBackend, fsmBackend}

// openBackend returns the register and how the fake cluster applies to it.
// The real store is skipped while fsm is unimplemented.
func openBackend(tb testing.TB, b backend) (Register, func(uint64, []byte) *commandv1.Result, *fakeRegister) {
	tb.Helper()
	if b == fakeBackend {
		r := newFakeRegister()
		return r, r.apply, r
	}
	store, err := fsm.Open(fsm.Config{Path: filepath.Join(tb.TempDir(), "r.db")})
	if err != nil {
		if strings.Contains(err.Error(), "not implemented") {
			tb.Skipf("fsm not implemented yet: %v", err)
		}
		tb.Fatal(err)
	}
	tb.Cleanup(func() { store.Close() })
	return store, func(idx uint64, cmd []byte) *commandv1.Result {
		res := store.Apply([]uint64{idx}, [][]byte{cmd})[0].(*commandv1.Result)
		store.Commit()
		return res
	}, nil
}

type harness struct {
	t    *testing.T
	srv  *Server
	cfg  Config
	fake *fakeCluster
	reg  *fakeRegister // nil for the real store
	base string
	rpc  consentv1.ConsentServiceClient
	ops  consentv1.ClusterServiceClient
}

func newHarness(t *testing.T, b backend, tweak ...func(*Config)) *harness {
	t.Helper()
	reg, apply, fake := openBackend(t, b)
	cl := &fakeCluster{apply: apply}
	cfg := Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Insecure: true, Version: "test"}
	for _, fn := range tweak {
		fn(&cfg)
	}
	srv, err := New(cfg, reg, cl)
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
	return &harness{t: t, srv: srv, cfg: srv.cfg, fake: cl, reg: fake, base: "http://" + srv.HTTPAddr(),
		rpc: consentv1.NewConsentServiceClient(cc), ops: consentv1.NewClusterServiceClient(cc)}
}

// forEachBackend runs a test against the fake register and the real store.
func forEachBackend(t *testing.T, fn func(t *testing.T, h *harness)) {
	for _, b := range backends {
		t.Run(string(b), func(t *testing.T) { fn(t, newHarness(t, b)) })
	}
}

type restReply struct {
	code int
	body map[string]any
	raw  []byte
}

func (h *harness) do(method, path, body string, header ...string) restReply {
	h.t.Helper()
	req, err := http.NewRequest(method, h.base+path, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := restReply{code: resp.StatusCode, raw: raw}
	if len(raw) > 0 && json.Unmarshal(raw, &out.body) != nil {
		out.body = map[string]any{"raw": string(raw)}
	}
	return out
}

// violation is the field named by a REST error's BadRequest detail.
func (r restReply) violation() string {
	details, _ := r.body["details"].([]any)
	for _, d := range details {
		m, _ := d.(map[string]any)
		if m["@type"] != "type.googleapis.com/google.rpc.BadRequest" {
			continue
		}
		if fv, _ := m["fieldViolations"].([]any); len(fv) > 0 {
			field, _ := fv[0].(map[string]any)["field"].(string)
			return field
		}
	}
	return ""
}

func (r restReply) object(key string) map[string]any {
	m, _ := r.body[key].(map[string]any)
	return m
}

func (r restReply) list(key string) []any {
	l, _ := r.body[key].([]any)
	return l
}

// logBuffer is a debug-level logger the tests can read.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

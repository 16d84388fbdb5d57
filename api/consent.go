package api

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lmc-consent/consentd/fsm"
	"github.com/lmc-consent/consentd/internal/broken"
	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
	consentv1 "github.com/lmc-consent/consentd/proto/consent/v1"
)

// defaultPageSize is the ListDecisions page size when none is asked for.
const defaultPageSize = 50

type consentService struct {
	consentv1.UnimplementedConsentServiceServer
	s *Server
}

// newID returns a UUIDv7: time-ordered, so ids sort roughly by acceptance.
func newID(now time.Time) string {
	var b [16]byte
	rand.Read(b[6:])
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli())<<16|uint64(binary.BigEndian.Uint16(b[6:8])))
	b[6] = 0x70 | b[6]&0x0f
	b[8] = 0x80 | b[8]&0x3f
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// forwardOverhead is room for the node-to-node message around a forwarded
// log entry.
const forwardOverhead = 4 << 10

// requestIDHeader is the metadata key the gateway puts X-Request-ID under.
const requestIDHeader = "x-request-id"

func headerRequestID(ctx context.Context) string {
	if v := metadata.ValueFromIncomingContext(ctx, requestIDHeader); len(v) > 0 {
		return v[0]
	}
	return ""
}

// requestID takes the idempotency key from the body or the X-Request-ID
// header; both given and different is an error rather than a guess.
func requestID(ctx context.Context, body string, now time.Time) (string, error) {
	header := headerRequestID(ctx)
	switch {
	case body != "" && header != "" && body != header:
		return "", &fsm.FieldError{Field: "request_id", Msg: "differs from the X-Request-ID header"}
	case body != "":
		return body, nil
	case header != "":
		return header, nil
	default:
		return newID(now), nil
	}
}

func (c *consentService) RecordDecision(ctx context.Context, req *consentv1.RecordDecisionRequest) (*consentv1.RecordDecisionResponse, error) {
	s := c.s
	now := s.cfg.Now()
	if err := fsm.ValidateNHSNumber(req.GetNhsNumber()); err != nil {
		return nil, s.grpcError(err)
	}
	rid, err := requestID(ctx, req.GetRequestId(), now)
	if err != nil {
		return nil, s.grpcError(err)
	}
	cmd, err := s.decisionCommand(ctx, req, rid, now)
	if err != nil {
		return nil, s.grpcError(err)
	}
	if err := fsm.ValidateRecordDecision(cmd, now); err != nil {
		return nil, s.grpcError(err)
	}
	if err := s.checkClockSkew(cmd, now); err != nil {
		return nil, s.grpcError(err)
	}
	res, err := s.propose(ctx, &commandv1.Envelope{Body: &commandv1.Envelope_RecordDecision{RecordDecision: cmd}})
	if err != nil {
		return nil, s.grpcError(err)
	}
	return toRecordDecisionResponse(res), nil
}

// RecordDecisions proposes a whole batch as one raft entry after checking
// every item here with the register's own rules, so bad input never reaches
// the log; the register checks again and is the authority. The outcome is
// mapped exactly as a single write's: unknown stays unknown.
func (c *consentService) RecordDecisions(ctx context.Context, req *consentv1.RecordDecisionsRequest) (*consentv1.RecordDecisionsResponse, error) {
	s := c.s
	now := s.cfg.Now()
	if headerRequestID(ctx) != "" {
		return nil, s.grpcError(&fsm.FieldError{Field: "request_id",
			Msg: "X-Request-ID cannot key a batch; give every decision its own requestId"})
	}
	items := req.GetDecisions()
	if n := len(items); n == 0 || n > fsm.MaxBatch {
		return nil, s.grpcError(&fsm.FieldError{Field: "decisions", Msg: fmt.Sprintf("must hold 1..%d decisions, got %d", fsm.MaxBatch, n)})
	}
	batch := &commandv1.RecordDecisions{Decisions: make([]*commandv1.RecordDecision, len(items))}
	for i, item := range items {
		// A node-made id would defeat a bulk load's retries: it must be the client's.
		if item.GetRequestId() == "" {
			return nil, s.grpcError(fsm.BatchItemError(i, &fsm.FieldError{Field: "request_id", Msg: "is required in a batch, so that retrying it is safe"}))
		}
		cmd, err := s.decisionCommand(ctx, item, item.GetRequestId(), now)
		if err != nil {
			return nil, s.grpcError(fsm.BatchItemError(i, err))
		}
		batch.Decisions[i] = cmd
	}
	if err := fsm.ValidateRecordDecisions(batch, now); err != nil {
		return nil, s.grpcError(err)
	}
	for i, cmd := range batch.Decisions {
		if err := s.checkClockSkew(cmd, now); err != nil {
			return nil, s.grpcError(fsm.BatchItemError(i, err))
		}
	}
	env := &commandv1.Envelope{Body: &commandv1.Envelope_RecordDecisions{RecordDecisions: batch}}
	// A follower forwards the entry to the leader as one gRPC message, which
	// the leader receives under the same bound as any request.
	if n, limit := proto.Size(env), s.cfg.MaxRecvMsgSize-forwardOverhead; n > limit {
		return nil, s.grpcError(&fsm.FieldError{Field: "decisions",
			Msg: fmt.Sprintf("the batch is %d bytes as a log entry, at most %d: send fewer decisions or shorter reasons", n, limit)})
	}
	res, err := s.propose(ctx, env)
	if err != nil {
		return nil, s.grpcError(err)
	}
	if len(res.GetItems()) != len(items) {
		// Never expected; the batch did commit, so say that rather than fail it.
		s.log.Error("batch result does not match the batch", "items", len(items), "results", len(res.GetItems()), "revision", res.GetRaftIndex())
		return nil, status.Errorf(codes.Internal, "the batch was committed at revision %d but its per-decision results are incomplete; retrying with the same request ids replays them", res.GetRaftIndex())
	}
	out := &consentv1.RecordDecisionsResponse{Revision: res.GetRaftIndex(), Results: make([]*consentv1.RecordDecisionResponse, len(items))}
	for i, item := range res.GetItems() {
		out.Results[i] = toRecordDecisionResponse(item)
	}
	return out, nil
}

// decisionCommand stamps a RecordDecision from a request: a new decision id,
// recorded_at, the caller as recorded_by and this node as accepted_by.
func (s *Server) decisionCommand(ctx context.Context, req *consentv1.RecordDecisionRequest, rid string, now time.Time) (*commandv1.RecordDecision, error) {
	cmd := &commandv1.RecordDecision{
		DecisionId: newID(now), RequestId: rid, NhsNumber: req.GetNhsNumber(),
		Kind: req.GetKind(), State: req.GetState(),
		RecordedAtMicros: now.UnixMicro(), RecordedBy: callerActor(ctx),
		Channel: req.GetChannel(), Reason: req.GetReason(), Restricted: req.GetRestricted(),
		ExpectedVersion: req.ExpectedVersion, AcceptedBy: s.cl.NodeID(),
		DecisionMaker: &commandv1.DecisionMaker{Type: "patient"},
	}
	if dm := req.GetDecisionMaker(); dm != nil {
		cmd.DecisionMaker = &commandv1.DecisionMaker{Type: dm.GetType(), ProxyRole: dm.GetProxyRole()}
	}
	if req.GetEffectiveFrom() != nil {
		if err := req.GetEffectiveFrom().CheckValid(); err != nil {
			return nil, &fsm.FieldError{Field: "effective_from", Msg: err.Error()}
		}
		cmd.EffectiveFromMicros, cmd.EffectiveFromGiven = req.GetEffectiveFrom().AsTime().UnixMicro(), true
	} else {
		cmd.EffectiveFromMicros = cmd.RecordedAtMicros
	}
	return cmd, nil
}

// checkClockSkew applies this node's bound on effective_from, which may be
// tighter than the register's.
func (s *Server) checkClockSkew(cmd *commandv1.RecordDecision, now time.Time) error {
	if cmd.GetEffectiveFromMicros() > now.Add(s.cfg.MaxClockSkew).UnixMicro() {
		return &fsm.FieldError{Field: "effective_from",
			Msg: fmt.Sprintf("is in the future (more than %v ahead of this node's clock)", s.cfg.MaxClockSkew)}
	}
	return nil
}

func toRecordDecisionResponse(res *commandv1.Result) *consentv1.RecordDecisionResponse {
	rec := res.GetDecision()
	return &consentv1.RecordDecisionResponse{
		Decision: toDecision(rec, rec.GetDecision().GetReason()),
		Consent:  toConsent(rec.GetDecision().GetKind(), res.GetCurrent()),
		Changed:  res.GetChanged(), Duplicate: res.GetDuplicate(),
	}
}

func (c *consentService) MarkEnteredInError(ctx context.Context, req *consentv1.MarkEnteredInErrorRequest) (*consentv1.MarkEnteredInErrorResponse, error) {
	s := c.s
	now := s.cfg.Now()
	if err := fsm.ValidateNHSNumber(req.GetNhsNumber()); err != nil {
		return nil, s.grpcError(err)
	}
	rid, err := requestID(ctx, req.GetRequestId(), now)
	if err != nil {
		return nil, s.grpcError(err)
	}
	cmd := &commandv1.MarkEnteredInError{
		RequestId: rid, NhsNumber: req.GetNhsNumber(), DecisionId: req.GetDecisionId(), Reason: req.GetReason(),
		RecordedAtMicros: now.UnixMicro(), RecordedBy: callerActor(ctx), ExpectedVersion: req.ExpectedVersion,
		AcceptedBy: s.cl.NodeID(),
	}
	if err := fsm.ValidateMarkEnteredInError(cmd); err != nil {
		return nil, s.grpcError(err)
	}
	res, err := s.propose(ctx, &commandv1.Envelope{Body: &commandv1.Envelope_MarkEnteredInError{MarkEnteredInError: cmd}})
	if err != nil {
		return nil, s.grpcError(err)
	}
	rec := res.GetDecision()
	return &consentv1.MarkEnteredInErrorResponse{
		Decision: toDecision(rec, rec.GetDecision().GetReason()),
		Consent:  toConsent(rec.GetDecision().GetKind(), res.GetCurrent()),
		Changed:  res.GetChanged(), Duplicate: res.GetDuplicate(),
	}, nil
}

func (s *Server) propose(ctx context.Context, env *commandv1.Envelope) (*commandv1.Result, error) {
	b, err := fsm.EncodeCommand(env)
	if err != nil {
		return nil, err
	}
	if rd := env.GetRecordDecision(); rd != nil && broken.On(broken.AckBeforeCommit) {
		// Broken on purpose: answer from a prediction while the proposal is still in flight.
		return s.ackBeforeCommit(ctx, b, rd)
	}
	res, err := s.cl.Apply(ctx, b)
	if err != nil {
		return nil, err
	}
	if err := fsm.ResultError(res); err != nil {
		return nil, err
	}
	return res, nil
}

// read makes a read linearizable unless the caller asked for stale, and
// says how it was served. The response's revision is then the register's:
// it may be below the read index, because raft never hands its no-op and
// barrier entries (a new leader's first) to the register.
func (s *Server) read(ctx context.Context, consistency string) (*consentv1.ReadInfo, error) {
	info := &consentv1.ReadInfo{ServedBy: s.cl.NodeID()}
	switch consistency {
	case "", "linearizable":
		info.Consistency = "linearizable"
		if _, err := s.cl.LinearizableRead(ctx); err != nil {
			return nil, err
		}
	case "stale":
		info.Consistency = "stale"
		commit, since := s.cl.StaleInfo()
		info.KnownCommitIndex, info.SinceLeaderContactMs = commit, since.Milliseconds()
	default:
		return nil, &fsm.FieldError{Field: "consistency", Msg: fmt.Sprintf("%q: want linearizable or stale", consistency)}
	}
	// The access-log entry may still be on its way to disk (see
	// overlapsAccessLog); nothing is read until it is there.
	if err := awaitAccess(ctx); err != nil {
		return nil, err
	}
	return info, nil
}

func (c *consentService) GetConsents(ctx context.Context, req *consentv1.GetConsentsRequest) (*consentv1.GetConsentsResponse, error) {
	s := c.s
	if err := fsm.ValidateNHSNumber(req.GetNhsNumber()); err != nil {
		return nil, s.grpcError(err)
	}
	info, err := s.read(ctx, req.GetConsistency())
	if err != nil {
		return nil, s.grpcError(err)
	}
	rev, consents, err := s.reg.GetConsents(req.GetNhsNumber())
	if err != nil {
		return nil, s.grpcError(err)
	}
	out := &consentv1.GetConsentsResponse{NhsNumber: req.GetNhsNumber(), Revision: rev, Read: info}
	for _, k := range consents {
		pc := &consentv1.Consent{Kind: k.Kind, State: k.State, Version: k.Version, DecisionId: k.DecisionID}
		if !k.EffectiveFrom.IsZero() {
			pc.EffectiveFrom = timestamppb.New(k.EffectiveFrom)
		}
		out.Consents = append(out.Consents, pc)
	}
	return out, nil
}

func (c *consentService) ListDecisions(ctx context.Context, req *consentv1.ListDecisionsRequest) (*consentv1.ListDecisionsResponse, error) {
	s := c.s
	if err := fsm.ValidateNHSNumber(req.GetNhsNumber()); err != nil {
		return nil, s.grpcError(err)
	}
	if k := req.GetKind(); k != "" {
		if !fsm.IsKind(k) {
			return nil, s.grpcError(&fsm.FieldError{Field: "kind", Msg: fmt.Sprintf("unknown kind %q (see GET /v1/kinds)", k)})
		}
	}
	// As AIP-158: 0 means the default, more than the maximum means the maximum.
	size := int(req.GetPageSize())
	switch {
	case size < 0:
		return nil, s.grpcError(&fsm.FieldError{Field: "page_size", Msg: "must not be negative"})
	case size == 0:
		size = min(defaultPageSize, s.cfg.MaxPageSize)
	case size > s.cfg.MaxPageSize:
		size = s.cfg.MaxPageSize
	}
	var after uint64
	if t := req.GetPageToken(); t != "" {
		b, err := base64.RawURLEncoding.DecodeString(t)
		if err != nil || len(b) != 8 {
			return nil, s.grpcError(&fsm.FieldError{Field: "page_token", Msg: "is not a token this API returned"})
		}
		after = binary.BigEndian.Uint64(b)
	}
	info, err := s.read(ctx, req.GetConsistency())
	if err != nil {
		return nil, s.grpcError(err)
	}
	rev, recs, next, err := s.reg.ListDecisions(req.GetNhsNumber(), req.GetKind(), after, size)
	if err != nil {
		return nil, s.grpcError(err)
	}
	out := &consentv1.ListDecisionsResponse{Revision: rev, Read: info}
	for _, r := range recs {
		out.Decisions = append(out.Decisions, toDecision(r, visibleReason(ctx, r)))
	}
	if next != 0 {
		out.NextPageToken = base64.RawURLEncoding.EncodeToString(binary.BigEndian.AppendUint64(nil, next))
	}
	return out, nil
}

func (c *consentService) CheckConsents(ctx context.Context, req *consentv1.CheckConsentsRequest) (*consentv1.CheckConsentsResponse, error) {
	s := c.s
	if !fsm.IsKind(req.GetKind()) {
		return nil, s.grpcError(&fsm.FieldError{Field: "kind", Msg: fmt.Sprintf("unknown kind %q", req.GetKind())})
	}
	if n := len(req.GetNhsNumbers()); n == 0 || n > s.cfg.MaxCheckBatch {
		return nil, s.grpcError(&fsm.FieldError{Field: "nhs_numbers", Msg: fmt.Sprintf("must hold 1..%d numbers, got %d", s.cfg.MaxCheckBatch, n)})
	}
	for i, n := range req.GetNhsNumbers() {
		if err := fsm.ValidateNHSNumber(n); err != nil {
			return nil, s.grpcError(&fsm.FieldError{Field: fmt.Sprintf("nhs_numbers[%d]", i), Msg: err.Error()})
		}
	}
	info, err := s.read(ctx, req.GetConsistency())
	if err != nil {
		return nil, s.grpcError(err)
	}
	rev, results, err := s.reg.CheckConsents(req.GetKind(), req.GetNhsNumbers())
	if err != nil {
		return nil, s.grpcError(err)
	}
	out := &consentv1.CheckConsentsResponse{Revision: rev, Read: info, Results: make([]*consentv1.CheckResult, len(results))}
	for i, r := range results {
		out.Results[i] = &consentv1.CheckResult{NhsNumber: r.NHSNumber, State: r.State, Version: r.Version}
	}
	return out, nil
}

func (c *consentService) ListKinds(ctx context.Context, _ *consentv1.ListKindsRequest) (*consentv1.ListKindsResponse, error) {
	out := &consentv1.ListKindsResponse{}
	for _, k := range fsm.Kinds() {
		pk := &consentv1.Kind{Name: k.Name, Description: k.Description, DefaultState: k.DefaultState}
		for _, st := range k.States {
			ps := &consentv1.KindState{Name: st.Name, Description: st.Description}
			for _, code := range st.Codes {
				ps.Codes = append(ps.Codes, &consentv1.ExternalCode{System: code.System, Code: code.Code})
			}
			pk.States = append(pk.States, ps)
		}
		out.Kinds = append(out.Kinds, pk)
	}
	return out, nil
}

func micros(v int64) *timestamppb.Timestamp {
	if v == 0 {
		return nil
	}
	return timestamppb.New(time.UnixMicro(v))
}

func toActor(a *commandv1.Actor) *consentv1.RecordedBy {
	if a == nil {
		return nil
	}
	return &consentv1.RecordedBy{OdsCode: a.GetOdsCode(), UserId: a.GetUserId(), Role: a.GetRole()}
}

func toDecision(rec *commandv1.DecisionRecord, reason string) *consentv1.Decision {
	if rec == nil {
		return nil
	}
	d := rec.GetDecision()
	out := &consentv1.Decision{
		Id: d.GetDecisionId(), NhsNumber: d.GetNhsNumber(), Kind: d.GetKind(), State: d.GetState(),
		EffectiveFrom: micros(d.GetEffectiveFromMicros()), RecordedAt: micros(d.GetRecordedAtMicros()),
		DecisionMaker: &consentv1.DecisionMaker{Type: d.GetDecisionMaker().GetType(), ProxyRole: d.GetDecisionMaker().GetProxyRole()},
		RecordedBy:    toActor(d.GetRecordedBy()), Channel: d.GetChannel(), Reason: reason, Restricted: d.GetRestricted(),
		RequestId: d.GetRequestId(), Revision: rec.GetRaftIndex(), Version: rec.GetVersion(), AcceptedBy: d.GetAcceptedBy(),
	}
	if e := rec.GetEnteredInError(); e != nil {
		out.EnteredInError = &consentv1.EnteredInError{Revision: e.GetRaftIndex(), Reason: e.GetReason(),
			RecordedAt: micros(e.GetRecordedAtMicros()), RecordedBy: toActor(e.GetRecordedBy()), RequestId: e.GetRequestId()}
	}
	return out
}

func toConsent(kind string, cur *commandv1.CurrentRecord) *consentv1.Consent {
	c := &consentv1.Consent{Kind: kind}
	if def, ok := fsm.DefaultState(kind); ok {
		c.State = def
	}
	if cur != nil {
		c.State, c.Version, c.DecisionId, c.EffectiveFrom = cur.GetState(), cur.GetVersion(), cur.GetDecisionId(), micros(cur.GetEffectiveFromMicros())
	}
	return c
}

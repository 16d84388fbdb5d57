package fsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
)

var deterministic = proto.MarshalOptions{Deterministic: true}

func put(b *bbolt.Bucket, k []byte, m proto.Message) error {
	v, err := deterministic.Marshal(m)
	if err != nil {
		return err
	}
	return b.Put(k, v)
}

func decisionKey(nhs string, index uint64) []byte {
	k := make([]byte, 0, len(nhs)+8)
	k = append(k, nhs...)
	return binary.BigEndian.AppendUint64(k, index)
}

func currentKey(nhs, kind string) []byte { return append([]byte(nhs), kind...) }

func invalid(idx uint64, field, msg string) *commandv1.Result {
	return &commandv1.Result{Code: commandv1.Result_CODE_INVALID_ARGUMENT, Field: field, Message: msg, RaftIndex: idx}
}

// applyOne applies one command. Rejections are results, not errors: the
// error return is only for storage failures.
func (s *Store) applyOne(tx *bbolt.Tx, idx uint64, data []byte) (*commandv1.Result, error) {
	env, err := DecodeCommand(data)
	if err != nil {
		return invalid(idx, "command", err.Error()), nil
	}
	switch body := env.GetBody().(type) {
	case *commandv1.Envelope_RecordDecision:
		return s.applyRecord(tx, idx, body.RecordDecision)
	case *commandv1.Envelope_MarkEnteredInError:
		return s.applyEnteredInError(tx, idx, body.MarkEnteredInError)
	case *commandv1.Envelope_UpsertNode:
		n := body.UpsertNode
		if n.GetId() == "" {
			return invalid(idx, "id", "node id is required"), nil
		}
		return &commandv1.Result{RaftIndex: idx}, put(tx.Bucket(bucketNodes), []byte(n.GetId()), n)
	case *commandv1.Envelope_RemoveNode:
		return &commandv1.Result{RaftIndex: idx}, tx.Bucket(bucketNodes).Delete([]byte(body.RemoveNode.GetId()))
	default:
		return invalid(idx, "command", "empty command"), nil
	}
}

func getCurrent(tx *bbolt.Tx, nhs, kind string) (*commandv1.CurrentRecord, error) {
	v := tx.Bucket(bucketCurrent).Get(currentKey(nhs, kind))
	if v == nil {
		return nil, nil
	}
	cur := &commandv1.CurrentRecord{}
	if err := proto.Unmarshal(v, cur); err != nil {
		return nil, fmt.Errorf("fsm: corrupt current record: %w", err)
	}
	return cur, nil
}

func getDecision(tx *bbolt.Tx, key []byte) (*commandv1.DecisionRecord, error) {
	v := tx.Bucket(bucketDecisions).Get(key)
	if v == nil {
		return nil, nil
	}
	rec := &commandv1.DecisionRecord{}
	if err := proto.Unmarshal(v, rec); err != nil {
		return nil, fmt.Errorf("fsm: corrupt decision: %w", err)
	}
	return rec, nil
}

// replay answers a request id seen before: the original outcome if the
// content is the same, a conflict otherwise.
func (s *Store) replay(tx *bbolt.Tx, idx uint64, requestID string, fp []byte, kind string) (*commandv1.Result, bool, error) {
	v := tx.Bucket(bucketRequests).Get([]byte(requestID))
	if v == nil {
		return nil, false, nil
	}
	req := &commandv1.RequestRecord{}
	if err := proto.Unmarshal(v, req); err != nil {
		return nil, false, fmt.Errorf("fsm: corrupt request record: %w", err)
	}
	if !bytes.Equal(req.GetFingerprint(), fp) {
		return &commandv1.Result{Code: commandv1.Result_CODE_REQUEST_CONFLICT, Field: "request_id",
			Message: "request_id was already used for a different request", RaftIndex: idx}, true, nil
	}
	key := tx.Bucket(bucketIDs).Get([]byte(req.GetDecisionId()))
	rec, err := getDecision(tx, key)
	if err != nil || rec == nil {
		return nil, false, fmt.Errorf("fsm: request %s points at missing decision %s", requestID, req.GetDecisionId())
	}
	if kind == "" {
		kind = rec.GetDecision().GetKind()
	}
	cur, err := getCurrent(tx, rec.GetDecision().GetNhsNumber(), kind)
	if err != nil {
		return nil, false, err
	}
	return &commandv1.Result{Decision: rec, Current: cur, Changed: rec.GetChanged(), Duplicate: true, RaftIndex: idx}, true, nil
}

func (s *Store) applyRecord(tx *bbolt.Tx, idx uint64, cmd *commandv1.RecordDecision) (*commandv1.Result, error) {
	if err := ValidateRecordDecision(cmd, zeroTime); err != nil {
		fe := asFieldError(err)
		return invalid(idx, fe.Field, fe.Msg), nil
	}
	fp := fingerprintRecord(cmd)
	if res, seen, err := s.replay(tx, idx, cmd.GetRequestId(), fp, cmd.GetKind()); seen || err != nil {
		return res, err
	}
	if tx.Bucket(bucketIDs).Get([]byte(cmd.GetDecisionId())) != nil {
		return invalid(idx, "decision_id", "decision id already exists"), nil
	}
	nhs, kind := cmd.GetNhsNumber(), cmd.GetKind()
	cur, err := getCurrent(tx, nhs, kind)
	if err != nil {
		return nil, err
	}
	version := cur.GetVersion()
	if cmd.ExpectedVersion != nil && cmd.GetExpectedVersion() != version {
		return &commandv1.Result{Code: commandv1.Result_CODE_VERSION_MISMATCH, Field: "expected_version",
			Message: fmt.Sprintf("expected version %d, current version is %d", cmd.GetExpectedVersion(), version), RaftIndex: idx}, nil
	}
	// The new decision wins if it is later in (effective_from, raft index)
	// than the current decision; the raft index always grows, so a tie on
	// effective_from goes to the newcomer.
	changed := cur.GetDecisionId() == "" || cmd.GetEffectiveFromMicros() >= cur.GetEffectiveFromMicros()
	rec := &commandv1.DecisionRecord{Decision: cmd, RaftIndex: idx, Version: version + 1, Changed: changed}
	next := &commandv1.CurrentRecord{State: cur.GetState(), Version: version + 1, DecisionId: cur.GetDecisionId(),
		EffectiveFromMicros: cur.GetEffectiveFromMicros(), RaftIndex: cur.GetRaftIndex()}
	if next.State == "" {
		next.State = s.kinds[kind].DefaultState
	}
	if changed {
		next.State, next.DecisionId, next.EffectiveFromMicros, next.RaftIndex = cmd.GetState(), cmd.GetDecisionId(), cmd.GetEffectiveFromMicros(), idx
	}
	key := decisionKey(nhs, idx)
	if err := put(tx.Bucket(bucketDecisions), key, rec); err != nil {
		return nil, err
	}
	if err := tx.Bucket(bucketIDs).Put([]byte(cmd.GetDecisionId()), key); err != nil {
		return nil, err
	}
	if err := put(tx.Bucket(bucketCurrent), currentKey(nhs, kind), next); err != nil {
		return nil, err
	}
	if err := put(tx.Bucket(bucketRequests), []byte(cmd.GetRequestId()), &commandv1.RequestRecord{
		Fingerprint: fp, DecisionId: cmd.GetDecisionId(), NhsNumber: nhs, RaftIndex: idx}); err != nil {
		return nil, err
	}
	return &commandv1.Result{Decision: rec, Current: next, Changed: changed, RaftIndex: idx}, nil
}

func (s *Store) applyEnteredInError(tx *bbolt.Tx, idx uint64, cmd *commandv1.MarkEnteredInError) (*commandv1.Result, error) {
	if err := ValidateMarkEnteredInError(cmd); err != nil {
		fe := asFieldError(err)
		return invalid(idx, fe.Field, fe.Msg), nil
	}
	fp := fingerprintEnteredInError(cmd)
	if res, seen, err := s.replayEIE(tx, idx, cmd, fp); seen || err != nil {
		return res, err
	}
	notFound := &commandv1.Result{Code: commandv1.Result_CODE_NOT_FOUND, Field: "decision_id",
		Message: "no decision with that id for that patient", RaftIndex: idx}
	key := tx.Bucket(bucketIDs).Get([]byte(cmd.GetDecisionId()))
	if key == nil || string(key[:10]) != cmd.GetNhsNumber() {
		return notFound, nil
	}
	key = bytes.Clone(key)
	rec, err := getDecision(tx, key)
	if err != nil || rec == nil {
		return notFound, err
	}
	if rec.GetEnteredInError() != nil {
		return invalid(idx, "decision_id", "decision is already marked entered in error"), nil
	}
	nhs, kind := cmd.GetNhsNumber(), rec.GetDecision().GetKind()
	cur, err := getCurrent(tx, nhs, kind)
	if err != nil {
		return nil, err
	}
	version := cur.GetVersion()
	if cmd.ExpectedVersion != nil && cmd.GetExpectedVersion() != version {
		return &commandv1.Result{Code: commandv1.Result_CODE_VERSION_MISMATCH, Field: "expected_version",
			Message: fmt.Sprintf("expected version %d, current version is %d", cmd.GetExpectedVersion(), version), RaftIndex: idx}, nil
	}
	rec.EnteredInError = &commandv1.EnteredInError{RaftIndex: idx, RequestId: cmd.GetRequestId(), Reason: cmd.GetReason(),
		RecordedAtMicros: cmd.GetRecordedAtMicros(), RecordedBy: cmd.GetRecordedBy()}
	if err := put(tx.Bucket(bucketDecisions), key, rec); err != nil {
		return nil, err
	}
	next := &commandv1.CurrentRecord{State: cur.GetState(), Version: version + 1, DecisionId: cur.GetDecisionId(),
		EffectiveFromMicros: cur.GetEffectiveFromMicros(), RaftIndex: cur.GetRaftIndex()}
	changed := false
	if cur.GetDecisionId() == cmd.GetDecisionId() {
		best, err := s.latestCounting(tx, nhs, kind)
		if err != nil {
			return nil, err
		}
		if best == nil {
			next.State, next.DecisionId, next.EffectiveFromMicros, next.RaftIndex = s.kinds[kind].DefaultState, "", 0, 0
		} else {
			d := best.GetDecision()
			next.State, next.DecisionId, next.EffectiveFromMicros, next.RaftIndex = d.GetState(), d.GetDecisionId(), d.GetEffectiveFromMicros(), best.GetRaftIndex()
		}
		changed = true
	}
	if err := put(tx.Bucket(bucketCurrent), currentKey(nhs, kind), next); err != nil {
		return nil, err
	}
	if err := put(tx.Bucket(bucketRequests), []byte(cmd.GetRequestId()), &commandv1.RequestRecord{
		Fingerprint: fp, DecisionId: cmd.GetDecisionId(), NhsNumber: nhs, RaftIndex: idx}); err != nil {
		return nil, err
	}
	return &commandv1.Result{Decision: rec, Current: next, Changed: changed, RaftIndex: idx}, nil
}

func (s *Store) replayEIE(tx *bbolt.Tx, idx uint64, cmd *commandv1.MarkEnteredInError, fp []byte) (*commandv1.Result, bool, error) {
	return s.replay(tx, idx, cmd.GetRequestId(), fp, "")
}

// latestCounting finds the decision that should be current: greatest
// (effective_from, raft index) among those not entered in error.
func (s *Store) latestCounting(tx *bbolt.Tx, nhs, kind string) (*commandv1.DecisionRecord, error) {
	var best *commandv1.DecisionRecord
	c := tx.Bucket(bucketDecisions).Cursor()
	prefix := []byte(nhs)
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		rec := &commandv1.DecisionRecord{}
		if err := proto.Unmarshal(v, rec); err != nil {
			return nil, err
		}
		d := rec.GetDecision()
		if d.GetKind() != kind || rec.GetEnteredInError() != nil {
			continue
		}
		if best == nil || d.GetEffectiveFromMicros() >= best.GetDecision().GetEffectiveFromMicros() {
			best = rec
		}
	}
	return best, nil
}

// fingerprintRecord covers what the client sent (not what the node stamped),
// so a retry of the same request matches however often it is re-stamped.
func fingerprintRecord(c *commandv1.RecordDecision) []byte {
	h := sha256.New()
	field := func(s string) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	num := func(v uint64) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], v)
		h.Write(n[:])
	}
	field("record")
	field(c.GetNhsNumber())
	field(c.GetKind())
	field(c.GetState())
	if c.GetEffectiveFromGiven() {
		num(1)
		num(uint64(c.GetEffectiveFromMicros()))
	} else {
		num(0)
	}
	field(c.GetDecisionMaker().GetType())
	field(c.GetDecisionMaker().GetProxyRole())
	field(c.GetChannel())
	field(c.GetReason())
	if c.GetRestricted() {
		num(1)
	} else {
		num(0)
	}
	if c.ExpectedVersion != nil {
		num(1)
		num(c.GetExpectedVersion())
	} else {
		num(0)
	}
	field(c.GetRecordedBy().GetOdsCode())
	return h.Sum(nil)
}

func fingerprintEnteredInError(c *commandv1.MarkEnteredInError) []byte {
	h := sha256.New()
	for _, s := range []string{"entered_in_error", c.GetNhsNumber(), c.GetDecisionId(), c.GetReason(), c.GetRecordedBy().GetOdsCode()} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	if c.ExpectedVersion != nil {
		fmt.Fprintf(h, "v%d", c.GetExpectedVersion())
	}
	return h.Sum(nil)
}

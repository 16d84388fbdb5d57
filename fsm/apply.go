package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
)

// Apply applies committed log entries in order, in the open apply
// transaction, and records the last index in it. data[i] is nil for
// entries that carry no command (they only advance the applied index).
// Entries at or below the last applied index are skipped and get a nil
// result. results[i] is a *commandv1.Result (as any, because raftnode
// declares this signature).
//
// Nothing applied is visible to readers or durable until Commit. That is
// the point: a bbolt commit writes pages and syncs twice, and paying it once
// per raft batch cost more CPU than everything else a node does under write
// load. Raft's log already holds every applied entry durably on a quorum;
// after a crash the register resumes from its last commit and raft applies
// the rest again, giving the same state because applying is deterministic.
//
// A rejected command is a Result with a non-OK code, never an error. A
// storage failure panics: raft's FSM contract has no error return, and a
// node that skipped an entry would silently diverge from its peers.
func (s *Store) Apply(indexes []uint64, data [][]byte) []any {
	if len(indexes) != len(data) {
		panic(fmt.Sprintf("fsm: Apply given %d indexes and %d entries", len(indexes), len(data)))
	}
	results := make([]any, len(indexes))
	if len(indexes) == 0 {
		return results
	}
	s.txMu.Lock()
	defer s.txMu.Unlock()
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		panic(fmt.Sprintf("fsm: Apply of entries %d..%d on a closed store", indexes[0], indexes[len(indexes)-1]))
	}
	if err := s.applyLocked(indexes, data, results); err != nil {
		// The transaction holds entries raft may have acknowledged; the
		// process must restart from the last commit.
		s.rollbackLocked()
		panic(fmt.Sprintf("fsm: bbolt transaction applying entries %d..%d failed; the register cannot go on without diverging: %v",
			indexes[0], indexes[len(indexes)-1], err))
	}
	return results
}

// applyLocked applies into wtx, beginning it if needed; s.txMu and s.mu
// (for reading) must be held.
func (s *Store) applyLocked(indexes []uint64, data [][]byte, results []any) error {
	if s.wtx == nil {
		tx, err := s.db.Begin(true)
		if err != nil {
			return err
		}
		s.wtx = tx
	}
	b, err := openBuckets(s.wtx)
	if err != nil {
		return err
	}
	applied, err := readApplied(b.meta)
	if err != nil {
		return err
	}
	// Decoded first, all of them, so that the read-ahead knows every key
	// the batch will touch before the first lookup waits on the disk.
	envs := make([]*commandv1.Envelope, len(indexes))
	bad := make([]error, len(indexes))
	last := applied
	for i, idx := range indexes {
		if idx <= last {
			continue
		}
		last = idx
		if data[i] != nil {
			envs[i], bad[i] = DecodeCommand(data[i])
		}
	}
	if last == applied {
		return nil
	}
	if !s.cfg.NoApplyReadAhead {
		s.readAheadApply(indexes, envs)
	}
	for i, idx := range indexes {
		switch {
		case bad[i] != nil:
			results[i] = &commandv1.Result{Code: commandv1.Result_CODE_INVALID_ARGUMENT, Message: bad[i].Error(), RaftIndex: idx}
		case envs[i] != nil:
			res, err := s.applyEntry(b, idx, envs[i])
			if err != nil {
				return fmt.Errorf("entry %d: %w", idx, err)
			}
			results[i] = res
		}
	}
	return b.meta.Put(keyAppliedIndex, u64Bytes(last))
}

// buckets are the layout's buckets inside one write transaction.
type buckets struct {
	meta, decisions, ids, current, requests, nodes *bolt.Bucket
}

func openBuckets(tx *bolt.Tx) (*buckets, error) {
	b := &buckets{
		meta:      tx.Bucket(bucketMeta),
		decisions: tx.Bucket(bucketDecisions),
		ids:       tx.Bucket(bucketDecisionIDs),
		current:   tx.Bucket(bucketCurrent),
		requests:  tx.Bucket(bucketRequests),
		nodes:     tx.Bucket(bucketNodes),
	}
	if b.meta == nil || b.decisions == nil || b.ids == nil || b.current == nil || b.requests == nil || b.nodes == nil {
		return nil, fmt.Errorf("a bucket of the layout is missing: %w", ErrUnknownFormat)
	}
	return b, nil
}

// applyEntry applies one command. The error return is only for storage
// failures; every rejection is a Result.
func (s *Store) applyEntry(b *buckets, idx uint64, env *commandv1.Envelope) (*commandv1.Result, error) {
	switch body := env.GetBody().(type) {
	case *commandv1.Envelope_RecordDecision:
		return s.applyRecordDecision(b, idx, body.RecordDecision)
	case *commandv1.Envelope_RecordDecisions:
		return s.applyRecordDecisions(b, idx, body.RecordDecisions)
	case *commandv1.Envelope_MarkEnteredInError:
		return s.applyMarkEnteredInError(b, idx, body.MarkEnteredInError)
	case *commandv1.Envelope_UpsertNode:
		n := body.UpsertNode
		if err := validateID("id", n.GetId()); err != nil {
			return invalidResult(idx, err), nil
		}
		return okResult(idx), putProto(b.nodes, []byte(n.GetId()), n)
	case *commandv1.Envelope_RemoveNode:
		if err := validateID("id", body.RemoveNode.GetId()); err != nil {
			return invalidResult(idx, err), nil
		}
		return okResult(idx), b.nodes.Delete([]byte(body.RemoveNode.GetId()))
	default:
		return &commandv1.Result{Code: commandv1.Result_CODE_INVALID_ARGUMENT, Message: "command has no known body", RaftIndex: idx}, nil
	}
}

func (s *Store) applyRecordDecision(b *buckets, idx uint64, cmd *commandv1.RecordDecision) (*commandv1.Result, error) {
	kind, err := s.validateRecordDecision(cmd)
	if err != nil {
		return invalidResult(idx, err), nil
	}
	p, rejected, err := s.prepareRecordDecision(b, idx, cmd, kind)
	if rejected != nil || err != nil {
		return rejected, err
	}
	return s.writeRecordDecision(b, idx, p)
}

// applyRecordDecisions applies a batch all or nothing: every item is
// prepared against the state before the batch, and only if none is
// rejected is any written. Items are for different patients and carry
// different request and decision ids (validated first), so preparing one
// never depends on writing another.
func (s *Store) applyRecordDecisions(b *buckets, idx uint64, cmd *commandv1.RecordDecisions) (*commandv1.Result, error) {
	kinds, err := validateRecordDecisions(cmd, time.Time{}, s.reg.lookup)
	if err != nil {
		return invalidResult(idx, err), nil
	}
	prepared := make([]*preparedDecision, len(cmd.GetDecisions()))
	for i, d := range cmd.GetDecisions() {
		p, rejected, err := s.prepareRecordDecision(b, idx, d, kinds[i])
		if err != nil {
			return nil, fmt.Errorf("decisions[%d]: %w", i, err)
		}
		if rejected != nil {
			rejected.Field = batchField(i, rejected.GetField())
			return rejected, nil
		}
		prepared[i] = p
	}
	out := &commandv1.Result{RaftIndex: idx, Items: make([]*commandv1.Result, len(prepared))}
	for i, p := range prepared {
		res, err := s.writeRecordDecision(b, idx, p)
		if err != nil {
			return nil, fmt.Errorf("decisions[%d]: %w", i, err)
		}
		out.Items[i] = res
	}
	return out, nil
}

// preparedDecision is a validated decision checked against the current
// state: either the replay of an earlier application of its request id, or
// the records that applying it writes.
type preparedDecision struct {
	replay *commandv1.Result
	cmd    *commandv1.RecordDecision
	kind   *Kind
	fp     []byte
	rec    *commandv1.DecisionRecord
	next   *commandv1.CurrentRecord
}

// prepareRecordDecision reads, never writes. rejected is the Result of a
// decision the register refuses; err is only for storage failures.
func (s *Store) prepareRecordDecision(b *buckets, idx uint64, cmd *commandv1.RecordDecision, kind *Kind) (p *preparedDecision, rejected *commandv1.Result, err error) {
	fp := recordDecisionFingerprint(cmd)
	res, seen, err := s.replayRequest(b, idx, cmd.GetRequestId(), fp)
	switch {
	case err != nil:
		return nil, nil, err
	case seen && res.GetCode() != commandv1.Result_CODE_OK:
		return nil, res, nil
	case seen:
		return &preparedDecision{replay: res}, nil, nil
	}
	if b.ids.Get([]byte(cmd.GetDecisionId())) != nil {
		return nil, invalidResult(idx, fieldErr("decision_id", "a decision with this id already exists")), nil
	}
	cur, err := getCurrent(b.current, cmd.GetNhsNumber(), kind)
	if err != nil {
		return nil, nil, err
	}
	if res := checkExpectedVersion(idx, cmd.ExpectedVersion, cur); res != nil {
		return nil, res, nil
	}
	// Raft indexes only grow, so a tie on effective_from goes to the newcomer.
	becomes := cur.GetDecisionId() == "" || cmd.GetEffectiveFromMicros() >= cur.GetEffectiveFromMicros()
	next := proto.Clone(cur).(*commandv1.CurrentRecord)
	next.Version = cur.GetVersion() + 1
	if becomes {
		next.State, next.DecisionId = cmd.GetState(), cmd.GetDecisionId()
		next.EffectiveFromMicros, next.RaftIndex = cmd.GetEffectiveFromMicros(), idx
	}
	rec := &commandv1.DecisionRecord{Decision: cmd, RaftIndex: idx, Version: next.Version, Changed: becomes}
	return &preparedDecision{cmd: cmd, kind: kind, fp: fp, rec: rec, next: next}, nil, nil
}

// writeRecordDecision stores a prepared decision, or answers its replay.
func (s *Store) writeRecordDecision(b *buckets, idx uint64, p *preparedDecision) (*commandv1.Result, error) {
	if p.replay != nil {
		return p.replay, nil
	}
	nhs, id := p.cmd.GetNhsNumber(), p.cmd.GetDecisionId()
	key := decisionKey(nhs, idx)
	if err := putProto(b.decisions, key, p.rec); err != nil {
		return nil, err
	}
	if err := b.ids.Put([]byte(id), key); err != nil {
		return nil, err
	}
	if err := putProto(b.current, currentKey(nhs, p.kind.Name), p.next); err != nil {
		return nil, err
	}
	if err := putRequest(b, p.cmd.GetRequestId(), p.fp, id, nhs, idx); err != nil {
		return nil, err
	}
	return &commandv1.Result{Decision: p.rec, Current: p.next, Changed: p.rec.GetChanged(), RaftIndex: idx}, nil
}

func (s *Store) applyMarkEnteredInError(b *buckets, idx uint64, cmd *commandv1.MarkEnteredInError) (*commandv1.Result, error) {
	if err := ValidateMarkEnteredInError(cmd); err != nil {
		return invalidResult(idx, err), nil
	}
	fp := markEnteredInErrorFingerprint(cmd)
	if res, seen, err := s.replayRequest(b, idx, cmd.GetRequestId(), fp); seen || err != nil {
		return res, err
	}
	nhs := cmd.GetNhsNumber()
	key := b.ids.Get([]byte(cmd.GetDecisionId()))
	if len(key) != nhsLen+8 || string(key[:nhsLen]) != nhs {
		return &commandv1.Result{Code: commandv1.Result_CODE_NOT_FOUND, Field: "decision_id",
			Message: fmt.Sprintf("no decision %q for this patient", cmd.GetDecisionId()), RaftIndex: idx}, nil
	}
	key = bytes.Clone(key)
	rec, err := getDecision(b.decisions, key)
	if err != nil {
		return nil, err
	}
	if rec.GetEnteredInError() != nil {
		return invalidResult(idx, fieldErr("decision_id", "decision %q is already entered in error", cmd.GetDecisionId())), nil
	}
	kind, ok := s.reg.lookup(rec.GetDecision().GetKind())
	if !ok {
		return nil, fmt.Errorf("stored decision %q has kind %q unknown to the registry", cmd.GetDecisionId(), rec.GetDecision().GetKind())
	}
	cur, err := getCurrent(b.current, nhs, kind)
	if err != nil {
		return nil, err
	}
	if res := checkExpectedVersion(idx, cmd.ExpectedVersion, cur); res != nil {
		return res, nil
	}
	rec.EnteredInError = &commandv1.EnteredInError{
		RaftIndex: idx, RequestId: cmd.GetRequestId(), Reason: cmd.GetReason(),
		RecordedAtMicros: cmd.GetRecordedAtMicros(), RecordedBy: cmd.GetRecordedBy(),
	}
	if err := putProto(b.decisions, key, rec); err != nil {
		return nil, err
	}
	next := proto.Clone(cur).(*commandv1.CurrentRecord)
	next.Version = cur.GetVersion() + 1
	changed := cur.GetDecisionId() == cmd.GetDecisionId()
	if changed {
		best, err := bestCounting(b.decisions, nhs, kind.Name)
		if err != nil {
			return nil, err
		}
		if best == nil {
			next.State, next.DecisionId, next.EffectiveFromMicros, next.RaftIndex = kind.DefaultState, "", 0, 0
		} else {
			d := best.GetDecision()
			next.State, next.DecisionId = d.GetState(), d.GetDecisionId()
			next.EffectiveFromMicros, next.RaftIndex = d.GetEffectiveFromMicros(), best.GetRaftIndex()
		}
	}
	if err := putProto(b.current, currentKey(nhs, kind.Name), next); err != nil {
		return nil, err
	}
	if err := putRequest(b, cmd.GetRequestId(), fp, cmd.GetDecisionId(), nhs, idx); err != nil {
		return nil, err
	}
	return &commandv1.Result{Decision: rec, Current: next, Changed: changed, RaftIndex: idx}, nil
}

// validateRecordDecision is ValidateRecordDecision without the clock, using
// the Store's registry index, and returns the command's kind.
func (s *Store) validateRecordDecision(cmd *commandv1.RecordDecision) (*Kind, error) {
	if err := validateRecordDecision(cmd, time.Time{}, s.reg.lookup); err != nil {
		return nil, err
	}
	k, _ := s.reg.lookup(cmd.GetKind())
	return k, nil
}

// replayRequest answers a request id that was applied before: its original
// outcome when the content matches, a conflict otherwise. seen is false for
// a new request id.
func (s *Store) replayRequest(b *buckets, idx uint64, requestID string, fp []byte) (res *commandv1.Result, seen bool, err error) {
	v := b.requests.Get([]byte(requestID))
	if v == nil {
		return nil, false, nil
	}
	req := &commandv1.RequestRecord{}
	if err := proto.Unmarshal(v, req); err != nil {
		return nil, true, fmt.Errorf("corrupt request record %q: %w", requestID, err)
	}
	if !bytes.Equal(req.GetFingerprint(), fp) {
		return &commandv1.Result{Code: commandv1.Result_CODE_REQUEST_CONFLICT, Field: "request_id",
			Message:   fmt.Sprintf("request_id %q was already used at revision %d for a different request", requestID, req.GetRaftIndex()),
			RaftIndex: idx}, true, nil
	}
	key := b.ids.Get([]byte(req.GetDecisionId()))
	if key == nil {
		return nil, true, fmt.Errorf("request %q refers to missing decision %q", requestID, req.GetDecisionId())
	}
	rec, err := getDecision(b.decisions, key)
	if err != nil {
		return nil, true, err
	}
	kind, ok := s.reg.lookup(rec.GetDecision().GetKind())
	if !ok {
		return nil, true, fmt.Errorf("stored decision %q has kind %q unknown to the registry", req.GetDecisionId(), rec.GetDecision().GetKind())
	}
	cur, err := getCurrent(b.current, req.GetNhsNumber(), kind)
	if err != nil {
		return nil, true, err
	}
	// For a replayed entered-in-error, changed is not stored, so it is
	// reported false; the decision and the current state are what count.
	changed := rec.GetRaftIndex() == req.GetRaftIndex() && rec.GetChanged()
	return &commandv1.Result{Decision: rec, Current: cur, Changed: changed, Duplicate: true, RaftIndex: idx}, true, nil
}

func checkExpectedVersion(idx uint64, expected *uint64, cur *commandv1.CurrentRecord) *commandv1.Result {
	if expected == nil || *expected == cur.GetVersion() {
		return nil
	}
	return &commandv1.Result{Code: commandv1.Result_CODE_VERSION_MISMATCH, Field: "expected_version",
		Message: fmt.Sprintf("expected version %d, current version is %d", *expected, cur.GetVersion()),
		Current: cur, RaftIndex: idx}
}

// getCurrent returns the stored current record, or the kind's default state
// at version 0 when nothing has been recorded.
func getCurrent(current *bolt.Bucket, nhs string, kind *Kind) (*commandv1.CurrentRecord, error) {
	v := current.Get(currentKey(nhs, kind.Name))
	if v == nil {
		return &commandv1.CurrentRecord{State: kind.DefaultState}, nil
	}
	cur := &commandv1.CurrentRecord{}
	if err := proto.Unmarshal(v, cur); err != nil {
		return nil, fmt.Errorf("corrupt current record for kind %s: %w", kind.Name, err)
	}
	return cur, nil
}

func getDecision(decisions *bolt.Bucket, key []byte) (*commandv1.DecisionRecord, error) {
	v := decisions.Get(key)
	if v == nil {
		return nil, fmt.Errorf("decision key %x is indexed but not stored", key)
	}
	rec := &commandv1.DecisionRecord{}
	if err := proto.Unmarshal(v, rec); err != nil {
		return nil, fmt.Errorf("corrupt decision record %x: %w", key, err)
	}
	return rec, nil
}

// bestCounting finds the decision that should be current for (nhs, kind):
// the greatest (effective_from, raft index) among those not entered in error.
func bestCounting(decisions *bolt.Bucket, nhs, kind string) (*commandv1.DecisionRecord, error) {
	var best *commandv1.DecisionRecord
	prefix := []byte(nhs)
	c := decisions.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		rec := &commandv1.DecisionRecord{}
		if err := proto.Unmarshal(v, rec); err != nil {
			return nil, fmt.Errorf("corrupt decision record %x: %w", k, err)
		}
		if rec.GetDecision().GetKind() != kind || rec.GetEnteredInError() != nil {
			continue
		}
		// The cursor runs in raft-index order, so >= lets a later index win a tie.
		if best == nil || rec.GetDecision().GetEffectiveFromMicros() >= best.GetDecision().GetEffectiveFromMicros() {
			best = rec
		}
	}
	return best, nil
}

func putRequest(b *buckets, requestID string, fp []byte, decisionID, nhs string, idx uint64) error {
	return putProto(b.requests, []byte(requestID), &commandv1.RequestRecord{
		Fingerprint: fp, DecisionId: decisionID, NhsNumber: nhs, RaftIndex: idx,
	})
}

func putProto(b *bolt.Bucket, key []byte, m proto.Message) error {
	v, err := marshal(m)
	if err != nil {
		return err
	}
	return b.Put(key, v)
}

func okResult(idx uint64) *commandv1.Result { return &commandv1.Result{RaftIndex: idx} }

func invalidResult(idx uint64, err error) *commandv1.Result {
	res := &commandv1.Result{Code: commandv1.Result_CODE_INVALID_ARGUMENT, Message: err.Error(), RaftIndex: idx}
	var fe *FieldError
	if errors.As(err, &fe) {
		res.Field, res.Message = fe.Field, fe.Msg
	}
	return res
}

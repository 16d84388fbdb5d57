package fsm

import (
	"context"
	"errors"
	"log/slog"

	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
)

// Read-ahead for apply batches.
//
// Applying a decision looks up its request id, its decision id and its
// patient's current record, and inserts its decision record beside the
// patient's others: four B+tree leaves, anywhere in a register larger than
// memory, and apply is one goroutine, so each leaf not resident is a page
// fault waited for alone. At ten million patients the load's second pass
// (decisions for patients already loaded) went from 22,000 to under 2,000
// decisions a second on the leader, which was taking 4,000 major faults a
// second. Before a batch is applied, its keys are read ahead as a check's
// are (readahead.go), all four buckets' worth at once.

// applyReadAheadMin is the fewest decisions in one Apply worth reading
// ahead for: a single write's four lookups cost less than the walk.
const applyReadAheadMin = 16

// applyKeys are the keys a batch of decisions looks up, by bucket.
type applyKeys struct {
	requests, ids, current, decisions [][]byte
}

func (k *applyKeys) add(idx uint64, d *commandv1.RecordDecision) {
	nhs := d.GetNhsNumber()
	k.requests = append(k.requests, []byte(d.GetRequestId()))
	k.ids = append(k.ids, []byte(d.GetDecisionId()))
	k.current = append(k.current, currentKey(nhs, d.GetKind()))
	k.decisions = append(k.decisions, decisionKey(nhs, idx))
}

// collectApplyKeys gathers the keys of every decision in envs (nil entries
// and other commands are skipped: marking in error is rare and touches
// keys only its stored decision names).
func collectApplyKeys(indexes []uint64, envs []*commandv1.Envelope) *applyKeys {
	k := &applyKeys{}
	for i, env := range envs {
		switch body := env.GetBody().(type) {
		case *commandv1.Envelope_RecordDecision:
			k.add(indexes[i], body.RecordDecision)
		case *commandv1.Envelope_RecordDecisions:
			for _, d := range body.RecordDecisions.GetDecisions() {
				k.add(indexes[i], d)
			}
		}
	}
	return k
}

// readAheadApply reads ahead the pages applying envs will look up. The
// caller holds s.mu for reading and the apply transaction; the read
// transaction here sees the last commit, whose pages bbolt keeps while
// the apply transaction is open, and ends before any lookup.
func (s *Store) readAheadApply(indexes []uint64, envs []*commandv1.Envelope) {
	k := collectApplyKeys(indexes, envs)
	if len(k.requests) < applyReadAheadMin {
		return
	}
	tx, err := s.db.Begin(false)
	if err != nil {
		s.readAheadFailedOnce("apply", err)
		return
	}
	defer tx.Rollback()
	var total readAheadStats
	for _, bk := range []struct {
		name []byte
		keys [][]byte
	}{
		{bucketRequests, k.requests}, {bucketDecisionIDs, k.ids}, {bucketCurrent, k.current}, {bucketDecisions, k.decisions},
	} {
		b := tx.Bucket(bk.name)
		if b == nil {
			s.readAheadFailedOnce("apply", errors.New("a bucket of the layout is missing"))
			return
		}
		st, err := readAheadLookups(tx, b, bk.keys)
		if err != nil {
			s.readAheadFailedOnce("apply", err)
			return
		}
		total.Levels += st.Levels
		total.Advised += st.Advised
		total.Leaves += st.Leaves
	}
	if total.Advised > 0 {
		s.log.Debug("fsm: apply read ahead", "decisions", len(k.requests), "levels", total.Levels, "pages", total.Advised, "leaves", total.Leaves)
	}
}

// readAheadFailedOnce logs a failed read-ahead at Warn the first time and
// at Debug after: a bbolt whose pages it does not understand would
// otherwise say so on every check and every batch.
func (s *Store) readAheadFailedOnce(what string, err error) {
	level := slog.LevelDebug
	if s.readAheadFailed.CompareAndSwap(false, true) {
		level = slog.LevelWarn
	}
	s.log.Log(context.Background(), level, "fsm: "+what+" read-ahead failed; going on without it", "err", err)
}

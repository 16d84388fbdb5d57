package fsm

import (
	"context"
	"fmt"
	"log/slog"

	bolt "go.etcd.io/bbolt"

	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
)

// Read-ahead for apply batches.
//
// Applying a decision looks up its request id, its decision id and its
// patient's current record, and inserts its decision record beside the
// patient's others: four B+tree leaves, anywhere in a register larger than
// memory, and apply is one goroutine, so each leaf not resident is a page
// fault waited for alone. At ten million patients the load's second pass
// (decisions for patients already loaded) fell from 22,000 to 1,500-8,000
// decisions a second, the leader taking 4,000 major faults a second.
// Before a batch is applied, its keys are read ahead as a check's are
// (readahead.go), all four buckets' worth at once: 500 decisions on a cold
// 3M register in 240 ms instead of 550-870 (BenchmarkApplyBatchCold), and
// that second pass 31% faster.

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

// eachDecision calls fn with every decision in envs and its entry's index
// until fn returns false (nil entries and other commands are skipped:
// marking in error is rare and touches keys only its stored decision
// names).
func eachDecision(indexes []uint64, envs []*commandv1.Envelope, fn func(idx uint64, d *commandv1.RecordDecision) bool) {
	for i, env := range envs {
		switch body := env.GetBody().(type) {
		case *commandv1.Envelope_RecordDecision:
			if !fn(indexes[i], body.RecordDecision) {
				return
			}
		case *commandv1.Envelope_RecordDecisions:
			for _, d := range body.RecordDecisions.GetDecisions() {
				if !fn(indexes[i], d) {
					return
				}
			}
		}
	}
}

// collectApplyKeys gathers the keys of the first limit decisions in envs,
// or of all of them when limit is negative.
func collectApplyKeys(indexes []uint64, envs []*commandv1.Envelope, limit int) *applyKeys {
	k := &applyKeys{}
	eachDecision(indexes, envs, func(idx uint64, d *commandv1.RecordDecision) bool {
		k.add(idx, d)
		return limit < 0 || len(k.requests) < limit
	})
	return k
}

// buckets pairs each bucket applying looks up with its keys.
func (k *applyKeys) buckets() []struct {
	name []byte
	keys [][]byte
} {
	return []struct {
		name []byte
		keys [][]byte
	}{
		{bucketRequests, k.requests}, {bucketDecisionIDs, k.ids}, {bucketCurrent, k.current}, {bucketDecisions, k.decisions},
	}
}

// readAheadApply reads ahead the pages applying envs will look up. The
// caller holds s.mu for reading and the apply transaction; the read
// transaction here sees the last commit, whose pages bbolt keeps while
// the apply transaction is open, and ends before any lookup.
//
// A register in memory, the usual case, costs a sample: the keys of the
// first residentSample decisions, whose leaves are tested with mincore in
// each bucket; only when one is not resident are all the batch's keys
// built and read ahead.
func (s *Store) readAheadApply(indexes []uint64, envs []*commandv1.Envelope) {
	n := 0
	eachDecision(indexes, envs, func(uint64, *commandv1.RecordDecision) bool {
		n++
		return n < applyReadAheadMin
	})
	if n < applyReadAheadMin {
		return
	}
	tx, err := s.db.Begin(false)
	if err == nil {
		var st readAheadStats
		st, err = readAheadBatch(tx, indexes, envs)
		tx.Rollback()
		if st.Advised > 0 {
			s.log.Debug("fsm: apply read ahead", "levels", st.Levels, "pages", st.Advised, "leaves", st.Leaves)
		}
	}
	if err != nil {
		s.readAheadFailedOnce("apply", err)
	}
}

// readAheadBatch samples, then reads ahead, in tx.
func readAheadBatch(tx *bolt.Tx, indexes []uint64, envs []*commandv1.Envelope) (readAheadStats, error) {
	var total readAheadStats
	bucket := func(name []byte) (*bolt.Bucket, error) {
		if b := tx.Bucket(name); b != nil {
			return b, nil
		}
		return nil, fmt.Errorf("bucket %s of the layout is missing", name)
	}
	cold := false
	for _, bk := range collectApplyKeys(indexes, envs, residentSample).buckets() {
		b, err := bucket(bk.name)
		if err != nil {
			return total, err
		}
		if cold, err = sampleCold(tx, b, bk.keys); err != nil || cold {
			break
		}
	}
	if !cold {
		return total, nil
	}
	for _, bk := range collectApplyKeys(indexes, envs, -1).buckets() {
		b, err := bucket(bk.name)
		if err != nil {
			return total, err
		}
		st, err := readAheadLookups(tx, b, bk.keys)
		total.Levels += st.Levels
		total.Advised += st.Advised
		total.Leaves += st.Leaves
		if err != nil {
			return total, err
		}
	}
	return total, nil
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

// sampleCold reports whether the leaf of any of keys in b is not resident.
func sampleCold(tx *bolt.Tx, b *bolt.Bucket, keys [][]byte) (bool, error) {
	root := uint64(b.Root())
	if root == 0 || len(keys) == 0 {
		return false, nil
	}
	m, ok, err := newMapView(tx, b)
	if err != nil || !ok {
		return false, err
	}
	_, cold, err := probeLeaves(m, root, keys)
	return cold, err
}

package fsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
)

// Consent is the current state of one kind for one patient.
type Consent struct {
	Kind          string
	State         string
	Version       uint64 // 0 when nothing recorded: State is the default
	DecisionID    string
	EffectiveFrom time.Time // zero when nothing recorded
}

// CheckResult is one patient's state for one kind.
type CheckResult struct {
	NHSNumber string
	State     string
	Version   uint64
}

const (
	// DefaultListLimit is the page size of ListDecisions when limit <= 0.
	DefaultListLimit = 100
	// MaxListLimit caps the page size of ListDecisions.
	MaxListLimit = 1000
)

// ConsentFromRecord turns a stored current record into a Consent; the
// EffectiveFrom of a kind at its default state is zero.
func ConsentFromRecord(kind string, cur *commandv1.CurrentRecord) Consent {
	c := Consent{Kind: kind, State: cur.GetState(), Version: cur.GetVersion(), DecisionID: cur.GetDecisionId()}
	if cur.GetDecisionId() != "" {
		c.EffectiveFrom = time.UnixMicro(cur.GetEffectiveFromMicros()).UTC()
	}
	return c
}

// GetConsents returns every kind of the registry for one patient, in
// registry order, read at one revision (the applied index).
func (s *Store) GetConsents(nhs string) (revision uint64, consents []Consent, err error) {
	if err := ValidateNHSNumber(nhs); err != nil {
		return 0, nil, err
	}
	err = s.view(func(tx *bolt.Tx, rev uint64) error {
		revision = rev
		current := tx.Bucket(bucketCurrent)
		consents = make([]Consent, len(s.reg.kinds))
		for i := range s.reg.kinds {
			k := &s.reg.kinds[i]
			cur, err := getCurrent(current, nhs, k)
			if err != nil {
				return fmt.Errorf("fsm: %w", err)
			}
			consents[i] = ConsentFromRecord(k.Name, cur)
		}
		return nil
	})
	if err != nil {
		return 0, nil, err
	}
	return revision, consents, nil
}

// CheckConsents returns one kind's state for each number, in request order,
// all read at one revision.
//
// A large check of a register larger than memory first has the pages its
// lookups will touch read ahead, all at once (readahead.go), rather than
// one page fault after another. It is then looked up by several
// goroutines, each in its own read transaction. Their answers are used
// only when every transaction saw the same applied index, which makes them
// one state; when a commit fell between them the check is looked up again
// in a single transaction, over the pages the first pass brought in.
func (s *Store) CheckConsents(kind string, nhs []string) (revision uint64, results []CheckResult, err error) {
	k, err := validateKind("kind", kind, s.reg.lookup)
	if err != nil {
		return 0, nil, err
	}
	for i, n := range nhs {
		if err := ValidateNHSNumber(n); err != nil {
			return 0, nil, fieldErr(fmt.Sprintf("nhs_numbers[%d]", i), "%s", fieldMsg(err))
		}
	}
	results = make([]CheckResult, len(nhs))
	if len(nhs) >= readAheadMin && !s.cfg.NoCheckReadAhead {
		s.readAheadChecks(k, nhs)
	}
	if workers := min(s.cfg.CheckWorkers, len(nhs)/checkChunkMin); workers > 1 {
		revision, same, err := s.checkInParallel(k, nhs, results, workers)
		if err != nil {
			return 0, nil, err
		}
		if same {
			return revision, results, nil
		}
	}
	err = s.view(func(tx *bolt.Tx, rev uint64) error {
		revision = rev
		return lookupChecks(tx, k, nhs, results)
	})
	if err != nil {
		return 0, nil, err
	}
	return revision, results, nil
}

// readAheadChecks reads ahead the pages a check's lookups will touch. It
// holds its own read transaction and ends it before the lookups begin
// theirs (see checkInParallel); a commit in between only means some of
// the pages it read are superseded. A failure costs nothing but speed.
func (s *Store) readAheadChecks(k *Kind, nhs []string) {
	keys := make([][]byte, len(nhs))
	for i, n := range nhs {
		keys[i] = currentKey(n, k.Name)
	}
	var st readAheadStats
	err := s.view(func(tx *bolt.Tx, _ uint64) error {
		var err error
		st, err = readAheadLookups(tx, tx.Bucket(bucketCurrent), keys)
		return err
	})
	if errors.Is(err, errClosed) {
		return // the lookups will say so
	}
	if err != nil {
		s.readAheadFailedOnce("check", err)
		return
	}
	if st.Advised > 0 {
		s.log.Debug("fsm: check read ahead", "numbers", len(nhs), "levels", st.Levels, "pages", st.Advised, "leaves", st.Leaves)
	}
}

// checkChunkMin is the fewest numbers given to one goroutine of a check:
// below about this many, starting the goroutine and its transaction costs
// more than the lookups it would overlap on a register in memory.
const checkChunkMin = 32

// checkInParallel looks nhs up in workers goroutines and reports whether
// all of them read the same revision. The caller holds no transaction: a
// goroutine waiting to begin one while another of the same caller is open
// can deadlock against a bbolt commit that must grow the map.
func (s *Store) checkInParallel(k *Kind, nhs []string, results []CheckResult, workers int) (revision uint64, same bool, err error) {
	revs := make([]uint64, workers)
	errs := make([]error, workers)
	chunk := (len(nhs) + workers - 1) / workers
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := w*chunk, min((w+1)*chunk, len(nhs))
		wg.Go(func() {
			errs[w] = s.view(func(tx *bolt.Tx, rev uint64) error {
				revs[w] = rev
				return lookupChecks(tx, k, nhs[lo:hi], results[lo:hi])
			})
		})
	}
	wg.Wait()
	// The workers fail alike (a closed store, a corrupt record): one error says it.
	for _, err := range errs {
		if err != nil {
			return 0, false, err
		}
	}
	for _, r := range revs[1:] {
		if r != revs[0] {
			return 0, false, nil
		}
	}
	return revs[0], true, nil
}

func lookupChecks(tx *bolt.Tx, k *Kind, nhs []string, results []CheckResult) error {
	current := tx.Bucket(bucketCurrent)
	for i, n := range nhs {
		cur, err := getCurrent(current, n, k)
		if err != nil {
			return fmt.Errorf("fsm: %w", err)
		}
		results[i] = CheckResult{NHSNumber: n, State: cur.GetState(), Version: cur.GetVersion()}
	}
	return nil
}

// ListDecisions returns up to limit decisions of a patient (of one kind when
// kind != ""), oldest first (commit order), starting after raft index
// `after`. next is the cursor for the following page, 0 when there is none.
// A limit <= 0 means DefaultListLimit; it is capped at MaxListLimit.
func (s *Store) ListDecisions(nhs, kind string, after uint64, limit int) (revision uint64, decisions []*commandv1.DecisionRecord, next uint64, err error) {
	if err := ValidateNHSNumber(nhs); err != nil {
		return 0, nil, 0, err
	}
	if kind != "" {
		if _, err := validateKind("kind", kind, s.reg.lookup); err != nil {
			return 0, nil, 0, err
		}
	}
	if limit <= 0 {
		limit = DefaultListLimit
	}
	limit = min(limit, MaxListLimit)
	err = s.view(func(tx *bolt.Tx, rev uint64) error {
		revision = rev
		if after == math.MaxUint64 {
			return nil
		}
		prefix := []byte(nhs)
		c := tx.Bucket(bucketDecisions).Cursor()
		for k, v := c.Seek(decisionKey(nhs, after+1)); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			rec := &commandv1.DecisionRecord{}
			if err := proto.Unmarshal(v, rec); err != nil {
				return fmt.Errorf("fsm: corrupt decision record %x: %w", k, err)
			}
			if kind != "" && rec.GetDecision().GetKind() != kind {
				continue
			}
			if len(decisions) == limit {
				next = decisions[limit-1].GetRaftIndex()
				return nil
			}
			decisions = append(decisions, rec)
		}
		return nil
	})
	if err != nil {
		return 0, nil, 0, err
	}
	return revision, decisions, next, nil
}

// Nodes returns the recorded member addresses, ordered by id.
func (s *Store) Nodes() ([]*commandv1.UpsertNode, error) {
	var out []*commandv1.UpsertNode
	err := s.view(func(tx *bolt.Tx, _ uint64) error {
		return tx.Bucket(bucketNodes).ForEach(func(k, v []byte) error {
			n := &commandv1.UpsertNode{}
			if err := proto.Unmarshal(v, n); err != nil {
				return fmt.Errorf("fsm: corrupt node record %q: %w", k, err)
			}
			out = append(out, n)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Digest returns a hex SHA-256 over the whole register at one revision; equal
// on every node that applied the same entries. It covers every bucket's keys
// and values, the applied index included.
func (s *Store) Digest() (revision uint64, digest string, err error) {
	h := sha256.New()
	var lenBuf [binary.MaxVarintLen64]byte
	// A tag before each field keeps a bucket boundary from reading as a key.
	writeField := func(tag byte, b []byte) {
		lenBuf[0] = tag
		h.Write(lenBuf[:1])
		n := binary.PutUvarint(lenBuf[:], uint64(len(b)))
		h.Write(lenBuf[:n])
		h.Write(b)
	}
	err = s.view(func(tx *bolt.Tx, rev uint64) error {
		revision = rev
		for _, name := range allBuckets() {
			bk := tx.Bucket(name)
			if bk == nil {
				return fmt.Errorf("fsm: bucket %s missing: %w", name, ErrUnknownFormat)
			}
			writeField('b', name)
			err := bk.ForEach(func(k, v []byte) error {
				writeField('k', k)
				writeField('v', v)
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, "", err
	}
	return revision, hex.EncodeToString(h.Sum(nil)), nil
}

// fieldMsg is a FieldError's message without its field name.
func fieldMsg(err error) string {
	if fe, ok := err.(*FieldError); ok {
		return fe.Msg
	}
	return err.Error()
}

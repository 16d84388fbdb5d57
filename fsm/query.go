package fsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
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

func (s *Store) consentOf(tx *bbolt.Tx, nhs, kind string) (Consent, error) {
	c := Consent{Kind: kind, State: s.kinds[kind].DefaultState}
	cur, err := getCurrent(tx, nhs, kind)
	if err != nil || cur == nil {
		return c, err
	}
	c.State, c.Version, c.DecisionID = cur.GetState(), cur.GetVersion(), cur.GetDecisionId()
	if cur.GetEffectiveFromMicros() != 0 {
		c.EffectiveFrom = time.UnixMicro(cur.GetEffectiveFromMicros()).UTC()
	}
	return c, nil
}

// GetConsents returns every kind of the registry for one patient, in
// registry order, read at one revision (the applied index).
func (s *Store) GetConsents(nhs string) (revision uint64, consents []Consent, err error) {
	if err := ValidateNHSNumber(nhs); err != nil {
		return 0, nil, err
	}
	err = s.view(func(tx *bbolt.Tx) error {
		revision = readApplied(tx)
		consents = make([]Consent, 0, len(s.order))
		for _, k := range s.order {
			c, err := s.consentOf(tx, nhs, k)
			if err != nil {
				return err
			}
			consents = append(consents, c)
		}
		return nil
	})
	return revision, consents, err
}

// CheckConsents returns one kind's state for each number, in request order,
// read in one transaction.
func (s *Store) CheckConsents(kind string, nhs []string) (revision uint64, results []CheckResult, err error) {
	if _, ok := s.kinds[kind]; !ok {
		return 0, nil, fieldErr("kind", "unknown kind %q", kind)
	}
	for i, n := range nhs {
		if err := ValidateNHSNumber(n); err != nil {
			return 0, nil, fieldErr(fmt.Sprintf("nhs_numbers[%d]", i), "%s", asFieldError(err).Msg)
		}
	}
	err = s.view(func(tx *bbolt.Tx) error {
		revision = readApplied(tx)
		results = make([]CheckResult, len(nhs))
		for i, n := range nhs {
			c, err := s.consentOf(tx, n, kind)
			if err != nil {
				return err
			}
			results[i] = CheckResult{NHSNumber: n, State: c.State, Version: c.Version}
		}
		return nil
	})
	return revision, results, err
}

// ListDecisions returns up to limit decisions of a patient (of one kind when
// kind != ""), oldest first (commit order), starting after raft index
// `after`. next is the cursor for the following page, 0 when there is none.
func (s *Store) ListDecisions(nhs, kind string, after uint64, limit int) (revision uint64, decisions []*commandv1.DecisionRecord, next uint64, err error) {
	if err := ValidateNHSNumber(nhs); err != nil {
		return 0, nil, 0, err
	}
	if kind != "" {
		if _, ok := s.kinds[kind]; !ok {
			return 0, nil, 0, fieldErr("kind", "unknown kind %q", kind)
		}
	}
	if limit <= 0 {
		limit = 50
	}
	err = s.view(func(tx *bbolt.Tx) error {
		revision = readApplied(tx)
		c := tx.Bucket(bucketDecisions).Cursor()
		prefix := []byte(nhs)
		for k, v := c.Seek(decisionKey(nhs, after+1)); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			rec := &commandv1.DecisionRecord{}
			if err := proto.Unmarshal(v, rec); err != nil {
				return fmt.Errorf("fsm: corrupt decision: %w", err)
			}
			if kind != "" && rec.GetDecision().GetKind() != kind {
				continue
			}
			if len(decisions) == limit {
				next = decisions[len(decisions)-1].GetRaftIndex()
				return nil
			}
			decisions = append(decisions, rec)
		}
		return nil
	})
	return revision, decisions, next, err
}

// Nodes returns the recorded member addresses, ordered by id.
func (s *Store) Nodes() ([]*commandv1.UpsertNode, error) {
	var out []*commandv1.UpsertNode
	err := s.view(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketNodes).ForEach(func(k, v []byte) error {
			n := &commandv1.UpsertNode{}
			if err := proto.Unmarshal(v, n); err != nil {
				return err
			}
			out = append(out, n)
			return nil
		})
	})
	return out, err
}

// Digest returns a hex SHA-256 over the whole register at one revision; equal
// on every node that applied the same entries.
func (s *Store) Digest() (revision uint64, digest string, err error) {
	h := sha256.New()
	err = s.view(func(tx *bbolt.Tx) error {
		revision = readApplied(tx)
		for _, name := range allBuckets() {
			h.Write(name)
			err := tx.Bucket(name).ForEach(func(k, v []byte) error {
				var n [8]byte
				binary.BigEndian.PutUint64(n[:], uint64(len(k)))
				h.Write(n[:])
				h.Write(k)
				binary.BigEndian.PutUint64(n[:], uint64(len(v)))
				h.Write(n[:])
				h.Write(v)
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	return revision, hex.EncodeToString(h.Sum(nil)), err
}

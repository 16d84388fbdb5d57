package fsm

// CONTRACT SKELETON: signatures are fixed (other packages compile against
// them); bodies are to be written.

import (
	"errors"
	"io"
	"log/slog"
	"time"

	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
)

var errUnimplemented = errors.New("fsm: not implemented yet")

// Config configures a Store.
type Config struct {
	// Path of the bbolt database file. Required.
	Path string
	// Logger for debug-level detail; apply never logs at info.
	Logger *slog.Logger
}

// Validate reports a missing or bad setting.
func (c Config) Validate() error { return errUnimplemented }

// Store is the register: one bbolt database.
type Store struct{}

// Open opens or creates the register at cfg.Path.
func Open(cfg Config) (*Store, error) { return nil, errUnimplemented }

// Close closes the database.
func (s *Store) Close() error { return errUnimplemented }

// AppliedIndex is the raft index of the last entry applied (0 for a new store).
func (s *Store) AppliedIndex() uint64 { return 0 }

// Apply applies committed log entries in order in one bbolt transaction and
// records the last index in that transaction. data[i] is nil for entries
// that carry no command (they only advance the applied index). Entries at or
// below AppliedIndex are skipped and get a nil result. results[i] is a
// *commandv1.Result (as any, because raftnode declares this signature).
func (s *Store) Apply(indexes []uint64, data [][]byte) []any { return nil }

// Snapshot captures a point-in-time view. The returned value also implements
// io.Closer, which releases it.
func (s *Store) Snapshot() (io.WriterTo, error) { return nil, errUnimplemented }

// Restore replaces the whole register atomically with a snapshot's content.
func (s *Store) Restore(r io.Reader) error { return errUnimplemented }

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

// GetConsents returns every kind of the registry for one patient, in
// registry order, read at one revision (the applied index).
func (s *Store) GetConsents(nhs string) (revision uint64, consents []Consent, err error) {
	return 0, nil, errUnimplemented
}

// CheckConsents returns one kind's state for each number, in request order,
// read in one transaction.
func (s *Store) CheckConsents(kind string, nhs []string) (revision uint64, results []CheckResult, err error) {
	return 0, nil, errUnimplemented
}

// ListDecisions returns up to limit decisions of a patient (of one kind when
// kind != ""), oldest first (commit order), starting after raft index
// `after`. next is the cursor for the following page, 0 when there is none.
func (s *Store) ListDecisions(nhs, kind string, after uint64, limit int) (revision uint64, decisions []*commandv1.DecisionRecord, next uint64, err error) {
	return 0, nil, 0, errUnimplemented
}

// Nodes returns the recorded member addresses, ordered by id.
func (s *Store) Nodes() ([]*commandv1.UpsertNode, error) { return nil, errUnimplemented }

// Digest returns a hex SHA-256 over the whole register at one revision; equal
// on every node that applied the same entries.
func (s *Store) Digest() (revision uint64, digest string, err error) {
	return 0, "", errUnimplemented
}

// EncodeCommand sets the envelope format and marshals it deterministically.
func EncodeCommand(env *commandv1.Envelope) ([]byte, error) { return nil, errUnimplemented }

// DecodeCommand unmarshals a log entry, refusing unknown formats and empty bodies.
func DecodeCommand(b []byte) (*commandv1.Envelope, error) { return nil, errUnimplemented }

// ResultError turns a non-OK Result into the matching sentinel error (a
// *FieldError for invalid arguments); nil for CODE_OK.
func ResultError(res *commandv1.Result) error { return errUnimplemented }

// MaxClockSkew is how far in the future effective_from may be.
const MaxClockSkew = 5 * time.Minute

// ValidateRecordDecision checks a command before it is proposed (now is the
// accepting node's clock) and again, without the clock check, inside apply.
func ValidateRecordDecision(cmd *commandv1.RecordDecision, now time.Time) error {
	return errUnimplemented
}

// ValidateMarkEnteredInError checks an entered-in-error command before proposing.
func ValidateMarkEnteredInError(cmd *commandv1.MarkEnteredInError) error { return errUnimplemented }

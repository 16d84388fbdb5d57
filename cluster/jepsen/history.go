package jepsen

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"time"
)

// Op types: every operation is an invoke followed by one completion.
const (
	TypeInvoke = "invoke"
	TypeOK     = "ok"
	TypeFail   = "fail" // definitely did not happen (or a read that failed)
	TypeInfo   = "info" // a write whose outcome is unknown
)

// Op functions.
const (
	FWrite = "write" // record a decision
	FCAS   = "cas"   // record a decision with expectedVersion
	FRead  = "read"  // linearizable GetConsents
	FStale = "stale" // GetConsents with consistency=stale
	FHist  = "hist"  // linearizable ListDecisions of one kind
)

// ConsentVal is one kind's current state as a read or write returned it.
type ConsentVal struct {
	Kind       string `json:"kind"`
	State      string `json:"state"`
	Version    uint64 `json:"version"`
	DecisionID string `json:"decisionId,omitempty"`
}

// Op is one line of history.jsonl. An invoke carries what was asked; its
// completion (same Index) carries what came back.
type Op struct {
	Index   int    `json:"index"`
	Type    string `json:"type"`
	Process int    `json:"process"`
	Client  string `json:"client"`
	Node    string `json:"node"`
	Proto   string `json:"proto"`
	F       string `json:"f"`
	NHS     string `json:"nhs"`
	Kind    string `json:"kind,omitempty"`
	// Time is nanoseconds since the run started, from a monotonic clock.
	Time int64 `json:"time"`

	// Writes (invoke): the unique token is sent as the reason.
	Token         string  `json:"token,omitempty"`
	State         string  `json:"state,omitempty"`
	EffectiveFrom int64   `json:"eff,omitempty"` // unix microseconds
	RequestID     string  `json:"requestId,omitempty"`
	Expected      *uint64 `json:"expected,omitempty"`

	// Writes (ok).
	DecisionID string      `json:"decisionId,omitempty"`
	Version    uint64      `json:"version,omitempty"`
	Changed    bool        `json:"changed,omitempty"`
	Duplicate  bool        `json:"duplicate,omitempty"`
	Consent    *ConsentVal `json:"consent,omitempty"`

	// Reads (ok).
	Consents  []ConsentVal `json:"consents,omitempty"`
	Revision  uint64       `json:"revision,omitempty"`
	Decisions []string     `json:"decisions,omitempty"` // hist: decision ids, oldest first

	// Failures.
	Error    string `json:"error,omitempty"`
	Mismatch bool   `json:"mismatch,omitempty"` // 409 on expectedVersion
}

// Recorder appends operations to history.jsonl and keeps them in memory.
type Recorder struct {
	start time.Time

	mu   sync.Mutex
	w    *bufio.Writer
	f    *os.File
	ops  []Op
	next int
	err  error
}

// NewRecorder creates path and records times relative to start.
func NewRecorder(path string, start time.Time) (*Recorder, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	return &Recorder{start: start, f: f, w: bufio.NewWriter(f)}, nil
}

// Now is the run's monotonic clock in nanoseconds.
func (r *Recorder) Now() int64 { return int64(time.Since(r.start)) }

// Invoke records an invocation, assigning its index and time.
func (r *Recorder) Invoke(op Op) Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	op.Type, op.Index, op.Time = TypeInvoke, r.next, r.Now()
	r.next++
	r.appendLocked(op)
	return op
}

// Complete records a completion of inv with the given type.
func (r *Recorder) Complete(inv Op, typ string, res Op) {
	r.mu.Lock()
	defer r.mu.Unlock()
	res.Index, res.Type, res.Time = inv.Index, typ, r.Now()
	res.Process, res.Client, res.Node, res.Proto, res.F, res.NHS, res.Kind = inv.Process, inv.Client, inv.Node, inv.Proto, inv.F, inv.NHS, inv.Kind
	r.appendLocked(res)
}

func (r *Recorder) appendLocked(op Op) {
	r.ops = append(r.ops, op)
	if r.err != nil {
		return
	}
	b, err := json.Marshal(op)
	if err != nil {
		r.err = err
		return
	}
	b = append(b, '\n')
	_, r.err = r.w.Write(b)
}

// Ops returns a copy of the history so far.
func (r *Recorder) Ops() []Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Op(nil), r.ops...)
}

// Close flushes and closes the file.
func (r *Recorder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return r.err
	}
	err := r.w.Flush()
	if cerr := r.f.Close(); err == nil {
		err = cerr
	}
	r.f = nil
	if r.err != nil {
		return r.err
	}
	return err
}

// ReadJSONL decodes one JSON value per line of path into a slice of T.
func ReadJSONL[T any](path string) ([]T, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return decodeJSONL[T](f, path)
}

func decodeJSONL[T any](r io.Reader, name string) ([]T, error) {
	var out []T
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	line := 0
	for sc.Scan() {
		line++
		if len(sc.Bytes()) == 0 {
			continue
		}
		var v T
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, line, err)
		}
		out = append(out, v)
	}
	return out, sc.Err()
}

// Call is an invocation paired with its completion. Done is nil when the run
// ended before the operation returned, which counts as info.
type Call struct {
	Invoke Op
	Done   *Op
}

// Status is ok, fail or info (an unfinished call is info).
func (c Call) Status() string {
	if c.Done == nil {
		return TypeInfo
	}
	return c.Done.Type
}

// End is the completion time, or MaxInt64 when there is none or the
// outcome is unknown: an indeterminate operation may take effect at any time.
func (c Call) End() int64 {
	if c.Done == nil || c.Done.Type == TypeInfo {
		return 1<<63 - 1
	}
	return c.Done.Time
}

// Pair matches invocations with completions by index, ordered by invoke
// time. A completion without an invocation is an error.
func Pair(ops []Op) ([]Call, error) {
	byIndex := map[int]int{}
	var calls []Call
	for _, op := range ops {
		switch op.Type {
		case TypeInvoke:
			if _, dup := byIndex[op.Index]; dup {
				return nil, fmt.Errorf("history: index %d invoked twice", op.Index)
			}
			byIndex[op.Index] = len(calls)
			calls = append(calls, Call{Invoke: op})
		case TypeOK, TypeFail, TypeInfo:
			i, ok := byIndex[op.Index]
			if !ok {
				return nil, fmt.Errorf("history: completion of index %d without an invocation", op.Index)
			}
			if calls[i].Done != nil {
				return nil, fmt.Errorf("history: index %d completed twice", op.Index)
			}
			done := op
			calls[i].Done = &done
		default:
			return nil, fmt.Errorf("history: index %d has unknown type %q", op.Index, op.Type)
		}
	}
	sort.SliceStable(calls, func(i, j int) bool { return calls[i].Invoke.Time < calls[j].Invoke.Time })
	return calls, nil
}

package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"
)

// Page sizes of Query.
const (
	DefaultQueryLimit = 100
	MaxQueryLimit     = 1000
)

// Filter selects entries for an auditor. Empty fields match everything;
// set fields must all match.
type Filter struct {
	NHSNumber string // one of the entry's NHS numbers
	Org       string // Caller.Org (ODS code)
	Subject   string // Caller.Subject
	Since     time.Time
	Until     time.Time // exclusive; Since is inclusive
	// AfterSeq returns only entries with a greater seq: a cursor an auditor
	// can keep between sessions.
	AfterSeq uint64
	// PageToken continues from the next value of an earlier Query with the
	// same filter.
	PageToken string
	// Limit is the page size: 0 means DefaultQueryLimit, and more than
	// MaxQueryLimit is cut to it.
	Limit int
}

// Query returns the entries matching f in seq order, and a token for the next
// page, empty when there are no more. It reads across rotated files and sees
// only fsynced lines, so it is safe while Appends go on; lines it cannot
// decode are skipped.
func (l *Log) Query(ctx context.Context, f Filter) ([]Entry, string, error) {
	after, limit, err := f.cursor()
	if err != nil {
		return nil, "", err
	}
	l.closeMu.RLock()
	closed := l.closed
	l.closeMu.RUnlock()
	if closed {
		return nil, "", ErrClosed
	}
	l.mu.Lock()
	segs := append([]segment(nil), l.segs...)
	l.mu.Unlock()

	// Files are named by their first seq, so those wholly at or below the
	// cursor are not opened.
	start := 0
	for i := range segs {
		if segs[i].first <= after+1 {
			start = i
		}
	}
	m := newMatcher(f, after)
	var out []Entry
	for _, s := range segs[start:] {
		if err := ctx.Err(); err != nil {
			return nil, "", err
		}
		// One more than the page says whether there is a next page.
		out, err = l.scanSegment(ctx, s, m, out, limit+1)
		if err != nil {
			return nil, "", err
		}
		if len(out) > limit {
			out = out[:limit]
			return out, strconv.FormatUint(out[limit-1].Seq, 10), nil
		}
	}
	return out, "", nil
}

// cursor validates f and returns the seq to continue after and the page size.
func (f Filter) cursor() (after uint64, limit int, err error) {
	after = f.AfterSeq
	if f.PageToken != "" {
		tok, err := strconv.ParseUint(f.PageToken, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%w: PageToken %q", ErrInvalidFilter, f.PageToken)
		}
		after = max(after, tok)
	}
	switch {
	case f.Limit < 0:
		return 0, 0, fmt.Errorf("%w: Limit must not be negative, got %d", ErrInvalidFilter, f.Limit)
	case f.Limit == 0:
		limit = DefaultQueryLimit
	default:
		limit = min(f.Limit, MaxQueryLimit)
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Until.After(f.Since) {
		return 0, 0, fmt.Errorf("%w: Until must be after Since", ErrInvalidFilter)
	}
	return after, limit, nil
}

// scanSegment appends the matching entries of one file to out until out
// holds want entries.
func (l *Log) scanSegment(ctx context.Context, s segment, m *matcher, out []Entry, want int) ([]Entry, error) {
	if s.limit == 0 {
		return out, nil
	}
	file, err := os.Open(segmentPath(l.cfg.Dir, s.name))
	if errors.Is(err, os.ErrNotExist) {
		return out, nil // retired (MaxFiles) since the snapshot of segs
	}
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	defer file.Close()
	var r io.Reader = file
	if s.limit > 0 {
		// Bytes past the fsynced size may be a line still being written.
		r = io.LimitReader(file, s.limit)
	}
	var bad, n int
	_, err = scanLines(r, func(line []byte) bool {
		if n++; n%1024 == 0 && ctx.Err() != nil {
			return false
		}
		if !m.mayMatch(line) {
			return true
		}
		e, derr := decodeLine(line)
		if derr != nil {
			bad++
			return true
		}
		if m.match(&e) {
			out = append(out, e)
		}
		return len(out) < want
	})
	if err != nil {
		return nil, fmt.Errorf("audit: reading %s: %w", s.name, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if bad > 0 {
		// Open warned about torn lines already; every query would repeat it.
		l.log.Debug("audit: skipped undecodable lines", "file", s.name, "lines", bad)
	}
	return out, nil
}

// matcher applies a Filter, with a byte search before decoding so that a
// query for one patient does not decode years of other patients' lines.
type matcher struct {
	f       Filter
	after   uint64
	needles [][]byte
}

func newMatcher(f Filter, after uint64) *matcher {
	m := &matcher{f: f, after: after}
	for _, s := range []string{f.NHSNumber, f.Org, f.Subject} {
		if s == "" {
			continue
		}
		// This package writes lines with json.Marshal, so a value appears
		// exactly as json.Marshal quotes it; a miss here is a miss after
		// decoding too. (A file re-encoded by other tools may escape
		// differently; such lines are outside what Query promises.)
		q, err := json.Marshal(s)
		if err == nil {
			m.needles = append(m.needles, q)
		}
	}
	return m
}

func (m *matcher) mayMatch(line []byte) bool {
	for _, n := range m.needles {
		if !bytes.Contains(line, n) {
			return false
		}
	}
	return true
}

func (m *matcher) match(e *Entry) bool {
	f := &m.f
	switch {
	case e.Seq <= m.after,
		f.Org != "" && e.Caller.Org != f.Org,
		f.Subject != "" && e.Caller.Subject != f.Subject,
		!f.Since.IsZero() && e.Time.Before(f.Since),
		!f.Until.IsZero() && !e.Time.Before(f.Until):
		return false
	}
	if f.NHSNumber == "" {
		return true
	}
	for _, n := range e.NHSNumbers {
		if n == f.NHSNumber {
			return true
		}
	}
	return false
}

package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
)

// maxBatch bounds how many entries share one write and fsync, so one batch
// cannot hold a large buffer or delay its first Append for long.
const maxBatch = 1024

// Log is one node's access log. Its methods are safe for concurrent use.
type Log struct {
	cfg Config
	log *slog.Logger

	// closeMu orders Append's hand-off to the writer against Close closing
	// reqs: Appends hold it shared while sending.
	closeMu sync.RWMutex
	closed  bool
	reqs    chan *appendReq
	exited  chan struct{} // closed when the writer has finished
	unlock  func() error

	w writer // owned by the writer goroutine once Open returns

	mu   sync.Mutex
	segs []segment // what Query may read; the last is the active file

	dropped atomic.Uint64
	fsyncs  atomic.Uint64 // Sync calls on log files: what group commit saves
	lastSeq atomic.Uint64 // highest seq known durable

	// Seams for tests: how the writer opens a file and fsyncs Dir.
	openFile func(path string) (segmentFile, int64, error)
	syncDir  func(dir string) error
}

// writer is the state of the goroutine that owns the active file.
type writer struct {
	f       segmentFile // nil after a failure, until the next batch creates a file
	name    string
	size    int64  // bytes of f that are fsynced
	next    uint64 // seq of the next entry
	buf     []byte // lines written by the next flush
	bufLast uint64 // seq of the last line in buf
	line    []byte
}

// appendReq is one Append waiting for its line to be durable.
type appendReq struct {
	body []byte // encodeBody output
	seq  uint64
	done chan error // buffered: the writer never waits for a caller that gave up
}

// Open recovers the log in cfg.Dir (creating it if needed) and starts its
// writer. It scans the newest file for the last seq and terminates a torn
// last line of any file (see the package doc).
func Open(cfg Config) (*Log, error) {
	return open(cfg, nil)
}

// open is Open with a hook to install test seams before any file is opened.
func open(cfg Config, seams func(*Log)) (*Log, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	l := &Log{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "audit"),
		reqs:     make(chan *appendReq, maxBatch),
		exited:   make(chan struct{}),
		openFile: openSegmentFile,
		syncDir:  syncDir,
	}
	if seams != nil {
		seams(l)
	}
	if _, err := os.Stat(cfg.Dir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("audit: %w", err)
		}
		// Dir's own entry must survive a crash for the files in it to.
		if err := l.syncDir(filepath.Dir(filepath.Clean(cfg.Dir))); err != nil {
			return nil, fmt.Errorf("audit: fsync parent of %s: %w", cfg.Dir, err)
		}
	}
	unlock, err := lockDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	if err := l.recover(); err != nil {
		unlock()
		return nil, err
	}
	l.unlock = unlock
	go l.run()
	return l, nil
}

// recover finds the next seq and opens the file to append to.
func (l *Log) recover() error {
	segs, err := listSegments(l.cfg.Dir)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	for _, s := range segs {
		path := segmentPath(l.cfg.Dir, s.name)
		torn, err := terminateTornTail(path)
		if err != nil {
			return fmt.Errorf("audit: checking %s for a torn line: %w", s.name, err)
		}
		if torn {
			l.log.Warn("audit: torn last line (a write cut short by a crash); ended it with a newline, readers skip it",
				"file", s.name)
		}
	}
	l.w.next = 1
	if len(segs) == 0 {
		l.segs = nil
		return l.createSegment(1)
	}
	newest := segs[len(segs)-1]
	path := segmentPath(l.cfg.Dir, newest.name)
	maxSeq, bad, err := recoverSeq(path)
	if err != nil {
		return fmt.Errorf("audit: reading %s: %w", newest.name, err)
	}
	if bad > 0 {
		l.log.Warn("audit: undecodable lines in the newest file; readers skip them", "file", newest.name, "lines", bad)
	}
	// A file may hold no decodable line yet (created just before a crash);
	// its name still says which seq it was created for.
	l.w.next = max(maxSeq+1, newest.first)
	l.lastSeq.Store(l.w.next - 1)
	f, size, err := l.openFile(path)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	// What an earlier process wrote without fsyncing becomes durable before
	// anything is appended after it.
	l.fsyncs.Add(1)
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("audit: fsync %s: %w", newest.name, err)
	}
	l.w.f, l.w.name, l.w.size = f, newest.name, size
	segs[len(segs)-1].limit = size
	l.segs = segs
	l.retire() // MaxFiles may have been lowered since the last run
	return nil
}

// createSegment creates the file for entries from seq on and makes it the
// active one.
func (l *Log) createSegment(seq uint64) error {
	name := segmentName(seq)
	path := segmentPath(l.cfg.Dir, name)
	f, size, err := l.openFile(path)
	if err != nil {
		return err
	}
	// Without this a crash could lose the file's directory entry along with
	// the fsynced lines in it.
	if err := l.syncDir(l.cfg.Dir); err != nil {
		f.Close()
		if size == 0 {
			os.Remove(path)
		}
		return fmt.Errorf("fsync %s: %w", l.cfg.Dir, err)
	}
	l.w.f, l.w.name, l.w.size = f, name, size
	l.mu.Lock()
	l.segs = append(l.segs, segment{name: name, first: seq, limit: size})
	l.mu.Unlock()
	l.retire()
	return nil
}

// retire removes the oldest rotated files beyond MaxFiles.
func (l *Log) retire() {
	if l.cfg.MaxFiles <= 0 {
		return
	}
	l.mu.Lock()
	n := len(l.segs) - 1 - l.cfg.MaxFiles // the active file is not counted
	if n <= 0 {
		l.mu.Unlock()
		return
	}
	old := make([]segment, n)
	copy(old, l.segs[:n])
	l.segs = append(l.segs[:0:0], l.segs[n:]...)
	l.mu.Unlock()
	for _, s := range old {
		// A file that cannot be removed now is found again by the next Open.
		if err := os.Remove(segmentPath(l.cfg.Dir, s.name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			l.log.Warn("audit: removing a retired file", "file", s.name, "err", err)
		}
	}
}

// run is the writer goroutine: it takes whatever Appends are waiting and
// commits them together.
func (l *Log) run() {
	defer close(l.exited)
	batch := make([]*appendReq, 0, maxBatch)
	for r := range l.reqs {
		batch = append(batch[:0], r)
	drain:
		for len(batch) < maxBatch {
			select {
			case r, ok := <-l.reqs:
				if !ok {
					break drain
				}
				batch = append(batch, r)
			default:
				break drain
			}
		}
		l.commit(batch)
		clear(batch) // drop references to answered requests
	}
	if l.w.f != nil {
		if err := l.w.f.Close(); err != nil {
			l.log.Warn("audit: closing the active file", "file", l.w.name, "err", err)
		}
		l.w.f = nil
	}
}

// commit writes batch with as few writes and fsyncs as rotation allows and
// answers every request.
func (l *Log) commit(batch []*appendReq) {
	w := &l.w
	// Numbers are taken for the whole batch up front: if it fails, some of
	// its lines may be on disk, so the numbers are never handed out again.
	for _, r := range batch {
		r.seq = w.next
		w.next++
	}
	start := 0 // first request not yet answered
	w.buf = w.buf[:0]
	var err error
	for i, r := range batch {
		w.line = frameLine(w.line[:0], r.seq, r.body)
		n := int64(len(w.line))
		if w.f == nil {
			if err = l.createSegment(r.seq); err != nil {
				break
			}
		} else if used := w.size + int64(len(w.buf)); used > 0 && used+n > l.cfg.MaxFileBytes {
			if err = l.flush(); err != nil {
				break
			}
			l.answer(batch[start:i], nil)
			start = i
			l.closeActive()
			if err = l.createSegment(r.seq); err != nil {
				break
			}
		}
		w.buf = append(w.buf, w.line...)
		w.bufLast = r.seq
	}
	if err == nil {
		err = l.flush()
	}
	if err == nil {
		l.answer(batch[start:], nil)
		return
	}
	l.failed(batch[start:], err)
}

// flush writes and fsyncs the buffered lines.
func (l *Log) flush() error {
	w := &l.w
	if len(w.buf) == 0 {
		return nil
	}
	if _, err := w.f.Write(w.buf); err != nil {
		return fmt.Errorf("write %s: %w", w.name, err)
	}
	l.fsyncs.Add(1)
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", w.name, err)
	}
	w.size += int64(len(w.buf))
	w.buf = w.buf[:0]
	if cap(w.buf) > 4<<20 {
		w.buf = nil // one burst of bulk checks should not pin its buffer for good
	}
	l.mu.Lock()
	l.segs[len(l.segs)-1].limit = w.size
	l.mu.Unlock()
	// After the limit: whoever sees lastSeq can read that entry.
	l.lastSeq.Store(w.bufLast)
	return nil
}

// closeActive closes a file whose lines are all fsynced.
func (l *Log) closeActive() {
	if err := l.w.f.Close(); err != nil {
		l.log.Warn("audit: closing a rotated file", "file", l.w.name, "err", err)
	}
	l.w.f = nil
}

// failed answers requests whose lines could not be made durable and retires
// the file they were going to: past its fsynced size its content is unknown
// (after a failed fsync the kernel may have dropped the pages), so it is never
// appended to again and the next batch starts a new file.
func (l *Log) failed(reqs []*appendReq, err error) {
	w := &l.w
	w.buf = w.buf[:0]
	if w.f != nil {
		w.f.Close()
		w.f = nil
		l.mu.Lock()
		last := len(l.segs) - 1
		removed := false
		if w.size == 0 {
			// Nothing acknowledged was ever in it.
			removed = os.Remove(segmentPath(l.cfg.Dir, w.name)) == nil
		}
		if removed {
			l.segs = l.segs[:last]
		} else {
			l.segs[last].limit = w.size
		}
		l.mu.Unlock()
	}
	first, last := reqs[0].seq, reqs[len(reqs)-1].seq
	if l.cfg.FailOpen {
		total := l.dropped.Add(uint64(len(reqs)))
		l.log.Warn("audit: access log write failed; entries dropped (fail-open)",
			"entries", len(reqs), "firstSeq", first, "lastSeq", last, "droppedTotal", total, "err", err)
		l.answer(reqs, nil)
		return
	}
	l.log.Error("audit: access log write failed; the accesses are refused (fail-closed)",
		"entries", len(reqs), "firstSeq", first, "lastSeq", last, "err", err)
	l.answer(reqs, fmt.Errorf("%w: %w", ErrUnavailable, err))
}

func (l *Log) answer(reqs []*appendReq, err error) {
	for _, r := range reqs {
		r.done <- err
	}
}

// Append records e and returns once its line is fsynced. It sets e.Node and
// e.Seq, and e.Time when zero. Failing closed, an error means the access must
// be refused: ErrUnavailable when the log cannot be written (try again: the
// next Append starts a new file), ErrInvalidEntry for a caller bug, ErrClosed,
// or the context's error. Failing open, a write failure is counted in Dropped
// and Append returns nil.
func (l *Log) Append(ctx context.Context, e Entry) error {
	if err := validateEntry(&e); err != nil {
		return err
	}
	if e.Time.IsZero() {
		e.Time = l.cfg.Now()
	}
	e.Node = l.cfg.Node
	body, err := encodeBody(e)
	if err != nil {
		return err
	}
	r := &appendReq{body: body, done: make(chan error, 1)}
	l.closeMu.RLock()
	if l.closed {
		l.closeMu.RUnlock()
		return ErrClosed
	}
	select {
	case l.reqs <- r:
	case <-ctx.Done():
		l.closeMu.RUnlock()
		return fmt.Errorf("audit: %w", ctx.Err())
	}
	l.closeMu.RUnlock()
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		// The line may still become durable; the caller only knows it is not yet.
		return fmt.Errorf("audit: waiting for the entry to be durable: %w", ctx.Err())
	}
}

// Dropped is how many entries were not recorded because the log could not be
// written while failing open.
func (l *Log) Dropped() uint64 { return l.dropped.Load() }

// LastSeq is the highest seq known durable on this node (0 for an empty log).
func (l *Log) LastSeq() uint64 { return l.lastSeq.Load() }

// Close commits the entries already handed to the writer, closes the active
// file and releases Dir. Appends after Close return ErrClosed.
func (l *Log) Close() error {
	l.closeMu.Lock()
	if l.closed {
		l.closeMu.Unlock()
		return nil
	}
	l.closed = true
	close(l.reqs)
	l.closeMu.Unlock()
	<-l.exited
	return l.unlock()
}

package audit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

var errInjected = errors.New("injected fault")

// faults is the unexported seam through which tests make the disk fail.
type faults struct {
	open, dirSync atomic.Bool
	write         atomic.Bool // writes half the bytes, then fails: a torn line
	sync          atomic.Bool
	syncHook      atomic.Pointer[func()] // runs inside every Sync of a log file
}

func (fs *faults) install(l *Log) {
	l.openFile = func(path string) (segmentFile, int64, error) {
		if fs.open.Load() {
			return nil, 0, fmt.Errorf("open %s: %w", path, errInjected)
		}
		f, size, err := openSegmentFile(path)
		if err != nil {
			return nil, 0, err
		}
		return &faultyFile{segmentFile: f, fs: fs}, size, nil
	}
	l.syncDir = func(dir string) error {
		if fs.dirSync.Load() {
			return errInjected
		}
		return syncDir(dir)
	}
}

type faultyFile struct {
	segmentFile
	fs *faults
}

func (f *faultyFile) Write(p []byte) (int, error) {
	if f.fs.write.Load() {
		n, _ := f.segmentFile.Write(p[:len(p)/2])
		return n, errInjected
	}
	return f.segmentFile.Write(p)
}

func (f *faultyFile) Sync() error {
	if h := f.fs.syncHook.Load(); h != nil {
		(*h)()
	}
	if f.fs.sync.Load() {
		return errInjected
	}
	return f.segmentFile.Sync()
}

// testClock returns a time one millisecond later on every call.
func testClock() func() time.Time {
	var n atomic.Int64
	base := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	return func() time.Time { return base.Add(time.Duration(n.Add(1)) * time.Millisecond) }
}

func testConfig(dir string) Config {
	return Config{Dir: dir, Node: "lmc-a", Now: testClock()}
}

// openTest opens a log on cfg (Dir defaults to a temp dir) and closes it at
// the end of the test.
func openTest(t testing.TB, cfg Config, fs *faults) *Log {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	if cfg.Node == "" {
		cfg.Node = "lmc-a"
	}
	if cfg.Now == nil {
		cfg.Now = testClock()
	}
	var seams func(*Log)
	if fs != nil {
		seams = fs.install
	}
	l, err := open(cfg, seams)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func testEntry(i int) Entry {
	return Entry{
		Caller:     Caller{Subject: fmt.Sprintf("user-%d", i%3), Org: []string{"A81001", "B82002"}[i%2], Role: "R8000"},
		Method:     "consent.v1.ConsentService/GetConsents",
		Operation:  OpRead,
		NHSNumbers: []string{"9990000018"},
		Kind:       "scr",
		Outcome:    OutcomeAllowed,
		Code:       "OK",
		RequestID:  fmt.Sprintf("req-%d", i),
		Remote:     "192.0.2.10:50000",
		Transport:  TransportGRPC,
	}
}

// bigEntry is a bulk check whose line alone nearly fills a file of
// minFileBytes, so every append after the first rotates.
func bigEntry(i int) Entry {
	e := testEntry(i)
	e.Operation = OpCheck
	e.NHSNumbers = nil
	for range 60 {
		e.NHSNumbers = append(e.NHSNumbers, "9990000018")
	}
	return e
}

func mustAppend(t testing.TB, l *Log, e Entry) {
	t.Helper()
	if err := l.Append(context.Background(), e); err != nil {
		t.Fatalf("append %s: %v", e.RequestID, err)
	}
}

// queryAll pages through every entry matching f.
func queryAll(t testing.TB, l *Log, f Filter) []Entry {
	t.Helper()
	var all []Entry
	for {
		page, next, err := l.Query(context.Background(), f)
		if err != nil {
			t.Fatalf("query: %v", err)
		}
		all = append(all, page...)
		if next == "" {
			return all
		}
		f.PageToken = next
	}
}

func seqs(es []Entry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.Seq
	}
	return out
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func logFiles(t testing.TB, dir string) []string {
	t.Helper()
	segs, err := listSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range segs {
		names = append(names, s.name)
	}
	if !slices.IsSorted(names) {
		t.Errorf("file names do not sort in seq order: %v", names)
	}
	return names
}

func readFile(t testing.TB, dir, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
	}
}

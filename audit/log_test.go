package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string // substring naming the field; "" for valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"no dir", func(c *Config) { c.Dir = "" }, "Dir"},
		{"no node", func(c *Config) { c.Node = "" }, "Node"},
		{"tiny files", func(c *Config) { c.MaxFileBytes = 10 }, "MaxFileBytes"},
		{"negative files", func(c *Config) { c.MaxFiles = -1 }, "MaxFiles"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{Dir: t.TempDir(), Node: "lmc-a"}
			tt.mutate(&c)
			err := c.WithDefaults().Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate = %v, want an error naming %s", err, tt.want)
			}
			if tt.want != "" {
				if _, err := Open(c); err == nil {
					t.Fatal("Open accepted an invalid config")
				}
			}
		})
	}
	d := DefaultConfig()
	if d.MaxFileBytes != 64<<20 || d.MaxFiles != 0 || d.FailOpen {
		t.Errorf("defaults changed: %+v", d)
	}
}

func TestAppendQueryRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "var", "audit") // Open creates it
	l := openTest(t, testConfig(dir), nil)
	at := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.FixedZone("BST", 3600))
	in := []Entry{testEntry(0), testEntry(1), testEntry(2)}
	in[1].Time = at
	in[1].Node = "spoofed"
	in[1].Seq = 99
	in[2].Operation = OpCheck
	in[2].NHSNumbers = []string{"9990000018", "9000000009"}
	in[2].Outcome = OutcomeDenied
	in[2].Code = "PermissionDenied"
	in[2].Transport = TransportREST
	for _, e := range in {
		mustAppend(t, l, e)
	}
	got, next, err := l.Query(context.Background(), Filter{})
	if err != nil || next != "" {
		t.Fatalf("Query = next %q, err %v", next, err)
	}
	if len(got) != len(in) {
		t.Fatalf("got %d entries, want %d", len(got), len(in))
	}
	for i, g := range got {
		want := in[i]
		want.Seq = uint64(i + 1)
		want.Node = "lmc-a"
		if want.Time.IsZero() {
			want.Time = g.Time // stamped by Config.Now
		}
		if g.Time.Location() != time.UTC || !g.Time.Equal(want.Time) {
			t.Errorf("entry %d time = %v, want %v in UTC", i, g.Time, want.Time)
		}
		want.Time, g.Time = time.Time{}, time.Time{}
		if fmt.Sprint(g) != fmt.Sprint(want) {
			t.Errorf("entry %d:\n got %+v\nwant %+v", i, g, want)
		}
	}
	if l.LastSeq() != 3 {
		t.Errorf("LastSeq = %d, want 3", l.LastSeq())
	}

	files := logFiles(t, dir)
	if len(files) != 1 || files[0] != "access-00000000000000000001.jsonl" {
		t.Fatalf("files = %v", files)
	}
	fi, err := os.Stat(filepath.Join(dir, files[0]))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
	}
	lines := strings.Split(strings.TrimSuffix(string(readFile(t, dir, files[0])), "\n"), "\n")
	const want = `{"v":1,"seq":2,"time":"2026-01-02T02:04:05.123456789Z","node":"lmc-a","caller":{"subject":"user-1","org":"B82002","role":"R8000"},` +
		`"method":"consent.v1.ConsentService/GetConsents","operation":"read","nhsNumbers":["9990000018"],"kind":"scr","outcome":"allowed",` +
		`"code":"OK","requestId":"req-1","remote":"192.0.2.10:50000","transport":"grpc"}`
	if lines[1] != want {
		t.Errorf("line 2 on disk:\n got %s\nwant %s", lines[1], want)
	}
}

func TestAppendRejectsInvalidEntries(t *testing.T) {
	l := openTest(t, Config{}, nil)
	tests := []struct {
		name   string
		mutate func(*Entry)
	}{
		{"no operation", func(e *Entry) { e.Operation = "" }},
		{"unknown operation", func(e *Entry) { e.Operation = "delete" }},
		{"no outcome", func(e *Entry) { e.Outcome = "" }},
		{"unknown transport", func(e *Entry) { e.Transport = "smtp" }},
		{"too large", func(e *Entry) { e.Method = strings.Repeat("x", maxLineBytes) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := testEntry(0)
			tt.mutate(&e)
			if err := l.Append(context.Background(), e); !errors.Is(err, ErrInvalidEntry) {
				t.Fatalf("Append = %v, want ErrInvalidEntry", err)
			}
		})
	}
	if l.LastSeq() != 0 {
		t.Errorf("rejected entries took seq numbers: LastSeq = %d", l.LastSeq())
	}
}

func TestSeqSurvivesReopenAndRotation(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.MaxFileBytes = minFileBytes // a few entries per file
	for round := range 3 {
		l := openTest(t, cfg, nil)
		if want := uint64(round * 20); l.LastSeq() != want {
			t.Fatalf("round %d: LastSeq after Open = %d, want %d", round, l.LastSeq(), want)
		}
		for i := range 20 {
			mustAppend(t, l, testEntry(round*20+i))
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	l := openTest(t, cfg, nil)
	got := queryAll(t, l, Filter{Limit: 7})
	if !slices.Equal(seqs(got), seqRange(1, 60)) {
		t.Fatalf("seqs = %v, want 1..60", seqs(got))
	}
	for i, e := range got {
		if want := fmt.Sprintf("req-%d", i); e.RequestID != want {
			t.Fatalf("entry %d is %s, want %s", e.Seq, e.RequestID, want)
		}
	}
	files := logFiles(t, dir)
	if len(files) < 10 {
		t.Fatalf("only %d files for 60 entries of ~300 bytes at %d bytes a file", len(files), cfg.MaxFileBytes)
	}
	for _, name := range files {
		b := readFile(t, dir, name)
		if int64(len(b)) > cfg.MaxFileBytes {
			t.Errorf("%s is %d bytes, over MaxFileBytes", name, len(b))
		}
		first, _ := parseSegmentName(name)
		e, err := decodeLine(b[:bytes.IndexByte(b, '\n')])
		if err != nil || e.Seq != first {
			t.Errorf("%s starts with seq %d (%v), want %d", name, e.Seq, err, first)
		}
	}
}

func TestRotationKeepsMaxFiles(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.MaxFileBytes = minFileBytes
	cfg.MaxFiles = 2
	l := openTest(t, cfg, nil)
	for i := range 60 {
		mustAppend(t, l, testEntry(i))
	}
	files := logFiles(t, dir)
	if len(files) != 3 {
		t.Fatalf("files = %v, want 2 rotated and the active one", files)
	}
	got := queryAll(t, l, Filter{})
	oldest, _ := parseSegmentName(files[0])
	if !slices.Equal(seqs(got), seqRange(oldest, 60)) {
		t.Fatalf("seqs = %v, want %d..60", seqs(got), oldest)
	}
	// A cursor from before the retained files still works.
	page, _, err := l.Query(context.Background(), Filter{AfterSeq: 1, Limit: 1})
	if err != nil || len(page) != 1 || page[0].Seq != oldest {
		t.Fatalf("Query after retired seq = %v, %v; want seq %d", seqs(page), err, oldest)
	}
	// Lowering MaxFiles takes effect at the next Open.
	l.Close()
	cfg.MaxFiles = 1
	openTest(t, cfg, nil)
	if files := logFiles(t, dir); len(files) != 2 {
		t.Fatalf("after reopen with MaxFiles 1: files = %v", files)
	}
}

func TestTornTail(t *testing.T) {
	tornEntry, err := encodeLine(func() Entry { e := testEntry(3); e.Seq = 4; e.Time = time.Unix(0, 0); return e }())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		tail     []byte   // appended to the newest file after 3 entries
		wantSeqs []uint64 // readable before the new append
		nextSeq  uint64
	}{
		{"half a line", tornEntry[:len(tornEntry)/2], seqRange(1, 3), 4},
		{"whole entry without its newline", tornEntry[:len(tornEntry)-1], seqRange(1, 4), 5},
		{"a single byte", []byte("{"), seqRange(1, 3), 4},
		{"nothing torn", nil, seqRange(1, 3), 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig(dir)
			l := openTest(t, cfg, nil)
			for i := range 3 {
				mustAppend(t, l, testEntry(i))
			}
			l.Close()
			name := logFiles(t, dir)[0]
			f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write(tt.tail)
			f.Close()
			before := readFile(t, dir, name)

			l = openTest(t, cfg, nil)
			if got := queryAll(t, l, Filter{}); !slices.Equal(seqs(got), tt.wantSeqs) {
				t.Fatalf("after reopen seqs = %v, want %v", seqs(got), tt.wantSeqs)
			}
			mustAppend(t, l, testEntry(9))
			got := queryAll(t, l, Filter{})
			if last := got[len(got)-1]; last.Seq != tt.nextSeq || last.RequestID != "req-9" {
				t.Fatalf("new entry = seq %d %s, want seq %d req-9", last.Seq, last.RequestID, tt.nextSeq)
			}
			after := readFile(t, dir, name)
			if !bytes.HasPrefix(after, before) {
				t.Fatal("Open rewrote bytes that were on disk")
			}
			if len(tt.tail) > 0 && after[len(before)] != '\n' {
				t.Fatal("torn line not ended with a newline before the next entry")
			}
		})
	}
}

// TestEmptyNewestFile: a crash right after creating a file leaves it empty;
// its name still carries the next seq.
func TestEmptyNewestFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, segmentName(41)), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	l := openTest(t, testConfig(dir), nil)
	mustAppend(t, l, testEntry(0))
	if got := queryAll(t, l, Filter{}); !slices.Equal(seqs(got), []uint64{41}) {
		t.Fatalf("seqs = %v, want [41]", seqs(got))
	}
}

func TestWriteFailure(t *testing.T) {
	tests := []struct {
		name  string
		set   func(*faults, bool)
		entry func(int) Entry // bigEntry: every append needs a new file
		// reappears: the failed line was fully written to a file that is
		// kept, so after a restart it is on disk after all: the log shows
		// too much rather than too little.
		reappears bool
	}{
		{"torn write", func(f *faults, on bool) { f.write.Store(on) }, testEntry, false},
		{"fsync", func(f *faults, on bool) { f.sync.Store(on) }, testEntry, true},
		{"fsync of a new file", func(f *faults, on bool) { f.sync.Store(on) }, bigEntry, false},
		{"create", func(f *faults, on bool) { f.open.Store(on) }, bigEntry, false},
		{"directory fsync", func(f *faults, on bool) { f.dirSync.Store(on) }, bigEntry, false},
	}
	for _, tt := range tests {
		for _, failOpen := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/failOpen=%v", tt.name, failOpen), func(t *testing.T) {
				dir := t.TempDir()
				cfg := testConfig(dir)
				cfg.FailOpen = failOpen
				// Rotation on every couple of entries, so creating files is exercised.
				cfg.MaxFileBytes = minFileBytes
				fs := &faults{}
				l := openTest(t, cfg, fs)
				for i := range 4 {
					mustAppend(t, l, tt.entry(i))
				}
				before := l.LastSeq()

				tt.set(fs, true)
				err := l.Append(context.Background(), tt.entry(100))
				if failOpen {
					if err != nil || l.Dropped() != 1 {
						t.Fatalf("fail-open Append = %v, Dropped = %d; want nil, 1", err, l.Dropped())
					}
				} else if !errors.Is(err, ErrUnavailable) || !errors.Is(err, errInjected) {
					t.Fatalf("fail-closed Append = %v, want ErrUnavailable wrapping the cause", err)
				}
				if l.LastSeq() != before {
					t.Fatalf("LastSeq moved to %d on a failed write", l.LastSeq())
				}

				// The log is not stuck: once the disk works, the next Append succeeds.
				tt.set(fs, false)
				mustAppend(t, l, tt.entry(101))
				if !failOpen && l.Dropped() != 0 {
					t.Errorf("fail-closed counted %d drops", l.Dropped())
				}
				got := queryAll(t, l, Filter{})
				want := append(seqRange(1, before), before+2) // before+1 was refused or dropped
				if !slices.Equal(seqs(got), want) {
					t.Fatalf("seqs = %v, want %v (a gap where the failed entry was)", seqs(got), want)
				}
				if got[len(got)-1].RequestID != "req-101" {
					t.Fatalf("last entry %s, want req-101", got[len(got)-1].RequestID)
				}

				// And a restart reads the same history.
				l.Close()
				l = openTest(t, cfg, nil)
				if tt.reappears {
					want = seqRange(1, before+2)
				}
				if again := queryAll(t, l, Filter{}); !slices.Equal(seqs(again), want) {
					t.Fatalf("after reopen seqs = %v, want %v", seqs(again), want)
				}
				mustAppend(t, l, testEntry(102))
				if l.LastSeq() != before+3 {
					t.Fatalf("after reopen LastSeq = %d, want %d", l.LastSeq(), before+3)
				}
			})
		}
	}
}

// TestFailClosedUnwritableDir uses the real file system: with the directory
// gone, creating the next file fails.
func TestFailClosedUnwritableDir(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.MaxFileBytes = minFileBytes
	l := openTest(t, cfg, nil)
	mustAppend(t, l, bigEntry(0)) // the next one needs a new file
	moved := dir + ".moved"
	if err := os.Rename(dir, moved); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(context.Background(), bigEntry(1)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Append with the directory gone = %v, want ErrUnavailable", err)
	}
	if err := os.Rename(moved, dir); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l, bigEntry(2))
}

func TestConcurrentAppends(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.MaxFileBytes = 16 << 10 // rotate under load too
	l := openTest(t, cfg, nil)
	const writers, each = 16, 64
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				e := testEntry(w*each + i)
				if err := l.Append(context.Background(), e); err != nil {
					errs <- err
					return
				}
				// Durable means readable at once, by any reader.
				last := l.LastSeq()
				got, _, err := l.Query(context.Background(), Filter{AfterSeq: last - 1, Limit: 1})
				if err != nil || len(got) != 1 || got[0].Seq != last {
					errs <- fmt.Errorf("query for durable seq %d: %v, %v", last, err, seqs(got))
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	check := func(l *Log) {
		got := queryAll(t, l, Filter{Limit: MaxQueryLimit})
		if !slices.Equal(seqs(got), seqRange(1, writers*each)) {
			t.Fatalf("seqs not unique and contiguous: %d entries, first %v", len(got), seqs(got)[:min(10, len(got))])
		}
		ids := map[string]bool{}
		for _, e := range got {
			ids[e.RequestID] = true
		}
		if len(ids) != writers*each {
			t.Fatalf("%d distinct entries, want %d", len(ids), writers*each)
		}
	}
	check(l)
	l.Close()
	check(openTest(t, cfg, nil))
}

// TestGroupCommit holds the first fsync until the other appends are queued
// behind it, then checks they shared one.
func TestGroupCommit(t *testing.T) {
	fs := &faults{}
	l := openTest(t, Config{}, fs)
	base := l.fsyncs.Load()
	release := make(chan struct{})
	inSync := make(chan struct{})
	var once sync.Once
	hook := func() { once.Do(func() { close(inSync); <-release }) }
	fs.syncHook.Store(&hook)

	const n = 64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	appendOne := func(i int) {
		wg.Go(func() {
			if err := l.Append(context.Background(), testEntry(i)); err != nil {
				errs <- err
			}
		})
	}
	appendOne(0)
	<-inSync
	for i := 1; i < n; i++ {
		appendOne(i)
	}
	waitFor(t, "appends to queue behind the fsync", func() bool { return len(l.reqs) == n-1 })
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := l.fsyncs.Load() - base; got != 2 {
		t.Fatalf("%d appends took %d fsyncs, want 2 (the held one, then one for the rest)", n, got)
	}
	if l.LastSeq() != n {
		t.Fatalf("LastSeq = %d, want %d", l.LastSeq(), n)
	}
}

func TestCloseAndLock(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	l := openTest(t, cfg, nil)
	mustAppend(t, l, testEntry(0))
	if _, err := Open(cfg); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Open of one Dir = %v, want in use", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if err := l.Append(context.Background(), testEntry(1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close = %v, want ErrClosed", err)
	}
	if _, _, err := l.Query(context.Background(), Filter{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Query after Close = %v, want ErrClosed", err)
	}
	l2 := openTest(t, cfg, nil)
	if l2.LastSeq() != 1 {
		t.Fatalf("LastSeq after reopen = %d", l2.LastSeq())
	}
}

func TestAppendContextCancelled(t *testing.T) {
	fs := &faults{}
	l := openTest(t, Config{}, fs)
	release, inSync := make(chan struct{}), make(chan struct{})
	var once sync.Once
	hook := func() { once.Do(func() { close(inSync); <-release }) }
	fs.syncHook.Store(&hook)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.Append(ctx, testEntry(0)) }()
	<-inSync // the writer has the entry and is fsyncing it
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Append = %v, want context.Canceled", err)
	}
	close(release)
	// The writer was not stuck on the caller that left.
	mustAppend(t, l, testEntry(1))
	if l.LastSeq() != 2 {
		t.Fatalf("LastSeq = %d, want 2", l.LastSeq())
	}
}

// TestQuerySeesOnlyFsyncedLines holds an fsync with its line already written
// and checks a reader does not see the line until the fsync returns.
func TestQuerySeesOnlyFsyncedLines(t *testing.T) {
	fs := &faults{}
	l := openTest(t, Config{}, fs)
	mustAppend(t, l, testEntry(0))
	release, inSync := make(chan struct{}), make(chan struct{})
	var once sync.Once
	hook := func() { once.Do(func() { close(inSync); <-release }) }
	fs.syncHook.Store(&hook)
	done := make(chan error)
	go func() { done <- l.Append(context.Background(), testEntry(1)) }()
	<-inSync
	if got := queryAll(t, l, Filter{}); !slices.Equal(seqs(got), []uint64{1}) {
		t.Fatalf("during the fsync a reader saw %v, want [1]", seqs(got))
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := queryAll(t, l, Filter{}); !slices.Equal(seqs(got), []uint64{1, 2}) {
		t.Fatalf("after the fsync a reader saw %v, want [1 2]", seqs(got))
	}
}

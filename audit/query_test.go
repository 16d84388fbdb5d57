package audit

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

// queryFixture appends 30 entries one millisecond apart: subjects user-0..2
// in turn, orgs A81001/B82002 in turn, and patient 9000000009 on every fifth.
func queryFixture(t *testing.T) (*Log, time.Time) {
	cfg := Config{MaxFileBytes: 4 << 10} // several files
	cfg.Now = testClock()
	start := cfg.Now() // entries start one millisecond after this
	l := openTest(t, cfg, nil)
	for i := range 30 {
		e := testEntry(i)
		if i%5 == 0 {
			e.NHSNumbers = append(e.NHSNumbers, "9000000009")
		}
		mustAppend(t, l, e)
	}
	return l, start
}

func TestQueryFilters(t *testing.T) {
	l, start := queryFixture(t)
	at := func(seq int) time.Time { return start.Add(time.Duration(seq) * time.Millisecond) }
	every := func(from, step int) []uint64 {
		var out []uint64
		for s := from; s <= 30; s += step {
			out = append(out, uint64(s))
		}
		return out
	}
	tests := []struct {
		name string
		f    Filter
		want []uint64
	}{
		{"all", Filter{}, seqRange(1, 30)},
		{"patient", Filter{NHSNumber: "9000000009"}, every(1, 5)},
		{"patient in every entry", Filter{NHSNumber: "9990000018"}, seqRange(1, 30)},
		{"unknown patient", Filter{NHSNumber: "9990000026"}, nil},
		{"org", Filter{Org: "B82002"}, every(2, 2)},
		{"subject", Filter{Subject: "user-1"}, every(2, 3)},
		{"org and subject", Filter{Org: "A81001", Subject: "user-0"}, every(1, 6)},
		{"org and patient", Filter{Org: "A81001", NHSNumber: "9000000009"}, every(1, 10)},
		{"since is inclusive", Filter{Since: at(28)}, seqRange(28, 30)},
		{"until is exclusive", Filter{Until: at(3)}, seqRange(1, 2)},
		{"window", Filter{Since: at(10), Until: at(13)}, seqRange(10, 12)},
		{"after seq", Filter{AfterSeq: 27}, seqRange(28, 30)},
		{"after the end", Filter{AfterSeq: 30}, nil},
		{"subject is not org", Filter{Org: "user-1"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := queryAll(t, l, tt.f)
			if !slices.Equal(seqs(got), tt.want) {
				t.Fatalf("seqs = %v, want %v", seqs(got), tt.want)
			}
		})
	}
}

func TestQueryPaging(t *testing.T) {
	l, _ := queryFixture(t)
	ctx := context.Background()
	page, next, err := l.Query(ctx, Filter{Limit: 12})
	if err != nil || !slices.Equal(seqs(page), seqRange(1, 12)) || next == "" {
		t.Fatalf("page 1 = %v, %q, %v", seqs(page), next, err)
	}
	page, next, err = l.Query(ctx, Filter{Limit: 12, PageToken: next})
	if err != nil || !slices.Equal(seqs(page), seqRange(13, 24)) || next == "" {
		t.Fatalf("page 2 = %v, %q, %v", seqs(page), next, err)
	}
	page, next, err = l.Query(ctx, Filter{Limit: 12, PageToken: next})
	if err != nil || !slices.Equal(seqs(page), seqRange(25, 30)) || next != "" {
		t.Fatalf("page 3 = %v, %q, %v", seqs(page), next, err)
	}
	// A full last page says there is no more rather than sending the caller
	// round for an empty one.
	page, next, err = l.Query(ctx, Filter{Limit: 10, AfterSeq: 20})
	if err != nil || len(page) != 10 || next != "" {
		t.Fatalf("exact last page = %v, %q, %v", seqs(page), next, err)
	}
	// The default page is DefaultQueryLimit and a big Limit is cut to MaxQueryLimit.
	for i := 30; i < MaxQueryLimit+10; i++ {
		mustAppend(t, l, testEntry(i))
	}
	if page, _, _ := l.Query(ctx, Filter{}); len(page) != DefaultQueryLimit {
		t.Errorf("default page has %d entries, want %d", len(page), DefaultQueryLimit)
	}
	if page, _, _ := l.Query(ctx, Filter{Limit: 1 << 20}); len(page) != MaxQueryLimit {
		t.Errorf("huge Limit gave %d entries, want %d", len(page), MaxQueryLimit)
	}
}

func TestQueryRejectsBadFilters(t *testing.T) {
	l := openTest(t, Config{}, nil)
	now := time.Now()
	for name, f := range map[string]Filter{
		"negative limit":     {Limit: -1},
		"page token":         {PageToken: "seven"},
		"until before since": {Since: now, Until: now.Add(-time.Second)},
		"empty window":       {Since: now, Until: now},
	} {
		t.Run(name, func(t *testing.T) {
			if _, _, err := l.Query(context.Background(), f); !errors.Is(err, ErrInvalidFilter) {
				t.Fatalf("Query = %v, want ErrInvalidFilter", err)
			}
		})
	}
}

// TestQueryWhileAppending: readers racing the writer and its rotations see
// complete entries in seq order, never a line being written.
func TestQueryWhileAppending(t *testing.T) {
	l := openTest(t, Config{MaxFileBytes: 4 << 10}, nil)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(done)
		for i := range 100 {
			if err := l.Append(context.Background(), testEntry(i)); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				floor := l.LastSeq()
				got, _, err := l.Query(context.Background(), Filter{Limit: MaxQueryLimit})
				if err != nil {
					t.Error(err)
					return
				}
				if uint64(len(got)) < floor || !slices.Equal(seqs(got), seqRange(1, uint64(len(got)))) {
					t.Errorf("query saw %d entries (durable before it: %d), not 1..n", len(got), floor)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestQueryCancelled(t *testing.T) {
	l, _ := queryFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := l.Query(ctx, Filter{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Query = %v, want context.Canceled", err)
	}
}

package audit

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestDecodeLine(t *testing.T) {
	good, err := encodeLine(func() Entry { e := testEntry(1); e.Seq = 7; e.Time = time.Unix(1, 0); return e }())
	if err != nil {
		t.Fatal(err)
	}
	good = bytes.TrimSuffix(good, []byte("\n"))
	tests := []struct {
		name string
		line string
		ok   bool
	}{
		{"ours", string(good), true},
		{"minimal", `{"v":1,"seq":1}`, true},
		{"other offset", `{"v":1,"seq":1,"time":"2026-01-01T01:00:00+01:00"}`, true},
		{"unknown fields are kept out", `{"v":1,"seq":1,"reason":"secret"}`, true},
		{"no version", `{"seq":1}`, false},
		{"future version", `{"v":2,"seq":1}`, false},
		{"no seq", `{"v":1}`, false},
		{"negative seq", `{"v":1,"seq":-1}`, false},
		{"torn", string(good[:len(good)/2]), false},
		{"trailing garbage", string(good) + "x", false},
		{"two lines glued", string(good) + string(good), false},
		{"empty", "", false},
		{"null", "null", false},
		{"array", "[]", false},
		{"bad time", `{"v":1,"seq":1,"time":"yesterday"}`, false},
		{"too long", `{"v":1,"seq":1,"method":"` + strings.Repeat("x", maxLineBytes) + `"}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := decodeLine([]byte(tt.line))
			if tt.ok != (err == nil) {
				t.Fatalf("decodeLine = %+v, %v; want ok=%v", e, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrCorruptLine) {
				t.Fatalf("error %v does not wrap ErrCorruptLine", err)
			}
			if err == nil && e.Time.Location() != time.UTC {
				t.Fatalf("time %v not in UTC", e.Time)
			}
		})
	}
}

func TestScanLines(t *testing.T) {
	long := strings.Repeat("y", maxLineBytes+10)
	tests := []struct {
		name  string
		in    string
		lines []string
		tail  int64
	}{
		{"empty", "", nil, 0},
		{"one", "a\n", []string{"a"}, 0},
		{"torn", "a\nbc", []string{"a"}, 2},
		{"blank lines", "\n\na\n", []string{"", "", "a"}, 0},
		{"buffer-sized line", strings.Repeat("z", 100<<10) + "\nb\n", []string{strings.Repeat("z", 100<<10), "b"}, 0},
		{"over-long line is cut", long + "\nb\n", []string{long[:maxLineBytes+1], "b"}, 0},
		{"over-long torn tail", "a\n" + long, []string{"a"}, int64(len(long))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			tail, err := scanLines(strings.NewReader(tt.in), func(line []byte) bool {
				got = append(got, string(line))
				return true
			})
			if err != nil || tail != tt.tail || !reflect.DeepEqual(got, tt.lines) {
				t.Fatalf("scanLines = %d lines, tail %d, %v; want %d lines, tail %d", len(got), tail, err, len(tt.lines), tt.tail)
			}
		})
	}
}

func TestSegmentNames(t *testing.T) {
	for _, seq := range []uint64{1, 9, 10, 1 << 40, ^uint64(0)} {
		name := segmentName(seq)
		if got, ok := parseSegmentName(name); !ok || got != seq {
			t.Errorf("parseSegmentName(%s) = %d, %v", name, got, ok)
		}
	}
	if segmentName(9) >= segmentName(10) {
		t.Error("names do not sort by seq")
	}
	for _, name := range []string{"access-1.jsonl", "access-00000000000000000000.jsonl", "access.lock", "notes.txt",
		"access-0000000000000000000x.jsonl", "access-00000000000000000001.jsonl.gz"} {
		if _, ok := parseSegmentName(name); ok {
			t.Errorf("parseSegmentName(%q) accepted", name)
		}
	}
}

// FuzzReadLine feeds arbitrary bytes to the line reader and decoder, as an
// auditor's copied or damaged file would: nothing panics, and whatever
// decodes re-encodes to a line that decodes to the same entry.
func FuzzReadLine(f *testing.F) {
	good, _ := encodeLine(func() Entry { e := testEntry(1); e.Seq = 7; e.Time = time.Unix(1, 5); return e }())
	f.Add(good)
	f.Add(bytes.TrimSuffix(good, []byte("\n")))
	f.Add(good[:len(good)/2])
	f.Add([]byte(`{"v":1,"seq":18446744073709551615,"nhsNumbers":null,"caller":{}}`))
	f.Add([]byte(`{"v":1,"seq":3,"time":"2026-01-01T01:00:00.5+01:00","method":"\u00e9\ud800"}` + "\n\n{"))
	f.Add([]byte("\xff\xfe\x00\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		check := func(line []byte) {
			e, err := decodeLine(line)
			if err != nil {
				if !errors.Is(err, ErrCorruptLine) {
					t.Fatalf("error %v does not wrap ErrCorruptLine", err)
				}
				return
			}
			roundTrip(t, e)
		}
		check(data)
		_, err := scanLines(bytes.NewReader(data), func(line []byte) bool { check(line); return true })
		if err != nil {
			t.Fatalf("scanLines: %v", err)
		}
	})
}

// FuzzEntryRoundTrip builds entries from arbitrary strings.
func FuzzEntryRoundTrip(f *testing.F) {
	f.Add("user-1", "A81001", "9990000018", "req\n\"1\"", int64(1), uint64(1))
	f.Add("", "<&>", "", "\xff", int64(-1e18), uint64(1<<63))
	f.Fuzz(func(t *testing.T, subject, org, nhs, reqID string, nanos int64, seq uint64) {
		if seq == 0 {
			seq = 1
		}
		e := testEntry(0)
		e.Caller.Subject, e.Caller.Org, e.RequestID, e.Seq = subject, org, reqID, seq
		e.NHSNumbers = []string{nhs, reqID}
		e.Time = time.Unix(0, nanos)
		roundTrip(t, e)
	})
}

// roundTrip checks that e encodes to one line that decodes to e, up to what
// JSON cannot carry (invalid UTF-8 becomes U+FFFD).
func roundTrip(t *testing.T, e Entry) {
	t.Helper()
	line, err := encodeLine(e)
	if err != nil {
		if errors.Is(err, ErrInvalidEntry) {
			return // e.g. a year JSON times cannot hold
		}
		t.Fatalf("encodeLine: %v", err)
	}
	if bytes.IndexByte(line, '\n') != len(line)-1 {
		t.Fatalf("encoded entry is not one line: %q", line)
	}
	got, err := decodeLine(line[:len(line)-1])
	if err != nil {
		t.Fatalf("decode of encoded %+v: %v (%s)", e, err, line)
	}
	want := e
	// encoding/json turns each invalid byte into U+FFFD, as ranging over a string does.
	valid := func(s string) string {
		var b strings.Builder
		for _, r := range s {
			b.WriteRune(r)
		}
		return b.String()
	}
	want.Caller = Caller{valid(e.Caller.Subject), valid(e.Caller.Org), valid(e.Caller.Role)}
	want.Node, want.Method, want.Kind = valid(e.Node), valid(e.Method), valid(e.Kind)
	want.Operation, want.Outcome = Operation(valid(string(e.Operation))), Outcome(valid(string(e.Outcome)))
	want.Code, want.RequestID, want.Remote, want.Transport = valid(e.Code), valid(e.RequestID), valid(e.Remote), valid(e.Transport)
	want.NHSNumbers = nil
	for _, n := range e.NHSNumbers {
		want.NHSNumbers = append(want.NHSNumbers, valid(n))
	}
	if !got.Time.Equal(want.Time) || got.Time.Location() != time.UTC {
		t.Fatalf("time %v, want %v in UTC", got.Time, want.Time)
	}
	got.Time, want.Time = time.Time{}, time.Time{}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
	}
	for _, s := range append(want.NHSNumbers, want.RequestID) {
		if !utf8.ValidString(s) {
			t.Fatalf("decoded invalid UTF-8 %q", s)
		}
	}
}

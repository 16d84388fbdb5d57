package procstat

import (
	"bufio"
	"strings"
	"testing"
)

func TestParseStatTicks(t *testing.T) {
	for _, tc := range []struct {
		name, stat string
		want       uint64
		wantErr    bool
	}{
		{name: "plain", stat: "1234 (etcd) S 1 1234 1234 0 -1 4194560 3000 0 0 0 150 27 0 0 20 0 12 0 100 0 0", want: 177},
		{name: "space and paren in the name", stat: "99 (a b) c) R 1 99 99 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 5 0 0", want: 10},
		{name: "truncated", stat: "99 (x) R 1 2 3", wantErr: true},
		{name: "no name", stat: "99 x R", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseStatTicks(tc.stat)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("ParseStatTicks = %d, %v; want %d, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestParseStatus(t *testing.T) {
	status := "Name:\tconsentd\nVmPeak:\t  900 kB\nVmRSS:\t  1234 kB\nRssAnon:\t  234 kB\nRssFile:\t  1000 kB\nRssShmem:\t0 kB\nThreads:\t9\n"
	got, err := parseStatus(bufio.NewScanner(strings.NewReader(status)))
	if err != nil {
		t.Fatal(err)
	}
	if want := (Memory{RSS: 1234 << 10, Anon: 234 << 10, File: 1000 << 10}); got != want {
		t.Fatalf("%+v, want %+v", got, want)
	}
}

package fsm

import (
	"fmt"
	"os"
	"testing"

	bolt "go.etcd.io/bbolt"

	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
)

// secondDecisions is one decision each for every step-th of nums, patients
// the register already holds, with ids that sort among the stored ones so
// that their leaves are spread over each bucket as a real load's are.
func secondDecisions(nums []string, step int, tag string) []*commandv1.RecordDecision {
	var ds []*commandv1.RecordDecision
	for i := step / 2; i < len(nums); i += step {
		ds = append(ds, decision(nums[i], "scr", "dissent", 2, fmt.Sprintf("cold-%d-%s", i, tag)))
	}
	return ds
}

// The read-ahead must ask for the keys apply touches; if it named others
// (a key built differently, a bucket mixed up) it would read the wrong
// pages and nothing else would notice. After the batch is applied, every
// key it collected is in its bucket.
func TestApplyReadAheadKeysAreWhatApplyWrites(t *testing.T) {
	s := openTest(t)
	nums := NHSNumbersFrom(900_000_000, 40)
	ds := secondDecisions(nums, 1, "a")
	single := decision(TestNHSNumber(900), "gp_secondary_use", "dissent", 1, "single")
	indexes := []uint64{1, 2, 3}
	envs := []*commandv1.Envelope{batch(ds...), nil, record(single)}
	k := collectApplyKeys(indexes, envs, -1)
	if len(k.requests) != len(ds)+1 {
		t.Fatalf("%d keys collected for %d decisions", len(k.requests), len(ds)+1)
	}
	res := applyNow(s, indexes, [][]byte{encode(t, envs[0]), nil, encode(t, envs[2])})
	for _, i := range []int{0, 2} {
		if r := res[i].(*commandv1.Result); r.GetCode() != commandv1.Result_CODE_OK {
			t.Fatalf("entry %d: %v %s", indexes[i], r.GetCode(), r.GetMessage())
		}
	}
	err := s.view(func(tx *bolt.Tx, _ uint64) error {
		for _, bk := range k.buckets() {
			b := tx.Bucket(bk.name)
			for _, key := range bk.keys {
				if b.Get(key) == nil {
					t.Errorf("bucket %s has no key %q, which the read-ahead collected", bk.name, key)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Reading ahead changes no outcome: the same entries, with and without it,
// give the same results and the same register.
func TestApplyReadAheadChangesNothing(t *testing.T) {
	path, nums := readAheadRegister(t)
	copyPath := path + ".copy"
	copyFile(t, path, copyPath)
	ds := secondDecisions(nums, 50, "b")
	// One item repeats an earlier request with other content: the batch is
	// refused whole, with the same field either way.
	conflict := append(secondDecisions(nums, 977, "c"), decision(nums[1], "scr", "dissent", 3, "cold-1"))
	indexes := []uint64{1_000_000, 1_000_001, 1_000_002}
	data := [][]byte{encode(t, batch(ds...)), encode(t, batch(conflict...)), encode(t, batch(ds...))}
	var digests [2]string
	var outcomes [2]string
	for i, cfg := range []Config{{Path: path}, {Path: copyPath, NoApplyReadAhead: true}} {
		s, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		res := applyNow(s, indexes, data)
		for _, r := range res {
			r := r.(*commandv1.Result)
			outcomes[i] += fmt.Sprintf("%v %s %d items; ", r.GetCode(), r.GetField(), len(r.GetItems()))
		}
		if _, digests[i], err = s.Digest(); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if outcomes[0] != outcomes[1] || digests[0] != digests[1] {
		t.Fatalf("with read-ahead: %s%s\nwithout: %s%s", outcomes[0], digests[0], outcomes[1], digests[1])
	}
	if want := "CODE_OK  "; outcomes[0][:len(want)] != want {
		t.Fatalf("outcomes %s: the first batch should apply", outcomes[0])
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

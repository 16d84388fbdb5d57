package fsm

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"

	bolt "go.etcd.io/bbolt"

	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
)

func encodedDecisions(b *testing.B, n int) [][]byte {
	b.Helper()
	out := make([][]byte, n)
	for i := range out {
		d := decision(TestNHSNumber(i%5000), "scr", []string{"dissent", "consent_core"}[i%2], i%300, fmt.Sprintf("bench-%d", i))
		enc, err := EncodeCommand(record(d))
		if err != nil {
			b.Fatal(err)
		}
		out[i] = enc
	}
	return out
}

// BenchmarkApply applies decisions one raft batch at a time (1 or 64
// entries, as BatchApplyCh delivers them) and commits every commitEvery
// batches: 1 is what a node did before commits were decoupled from
// batches (two fsyncs per batch); 16 is nearer what a loaded node does
// now, committing every 100 ms. Reported per decision.
func BenchmarkApply(b *testing.B) {
	for _, bc := range []struct{ batch, commitEvery int }{{1, 1}, {1, 256}, {64, 1}, {64, 16}} {
		b.Run(fmt.Sprintf("batch=%d/commitEvery=%d", bc.batch, bc.commitEvery), func(b *testing.B) {
			s := openTest(b)
			cmds := encodedDecisions(b, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i, k := 0, 0; i < b.N; i, k = i+bc.batch, k+1 {
				n := min(bc.batch, b.N-i)
				idx := make([]uint64, n)
				for j := range idx {
					idx[j] = uint64(i + j + 1)
				}
				s.Apply(idx, cmds[i:i+n])
				if (k+1)%bc.commitEvery == 0 {
					s.Commit()
				}
			}
			s.Commit()
		})
	}
}

func BenchmarkGetConsents(b *testing.B) {
	s := openTest(b)
	cmds := encodedDecisions(b, 5000)
	idx := make([]uint64, len(cmds))
	for i := range idx {
		idx[i] = uint64(i + 1)
	}
	applyNow(s, idx, cmds)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := s.GetConsents(TestNHSNumber(i % 5000)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckConsents1000(b *testing.B) {
	s := openTest(b)
	cmds := encodedDecisions(b, 5000)
	idx := make([]uint64, len(cmds))
	for i := range idx {
		idx[i] = uint64(i + 1)
	}
	applyNow(s, idx, cmds)
	nums := make([]string, 1000)
	for i := range nums {
		nums[i] = TestNHSNumber(i * 3)
	}
	// workers=1 is the lookups one after another; the default overlaps
	// them, which only pays on a register larger than memory and must not
	// cost much on one in memory, as here.
	for _, workers := range []int{1, DefaultCheckWorkers} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			s.cfg.CheckWorkers = workers
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, _, err := s.CheckConsents("scr", nums); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkEncodeCommand(b *testing.B) {
	d := decision(pt, "scr", "dissent", 1, "bench")
	env := record(d)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := EncodeCommand(env); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeCommand(b *testing.B) {
	enc, _ := EncodeCommand(record(decision(pt, "scr", "dissent", 1, "bench")))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := DecodeCommand(enc); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkApplyRecordDecisions1000 is one RecordDecisions entry of 1,000
// decisions (the bulk-load shape: one raft entry), committed each time;
// reported per batch.
func BenchmarkApplyRecordDecisions1000(b *testing.B) {
	s := openTest(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		ds := make([]*commandv1.RecordDecision, MaxBatch)
		for k := range ds {
			n := i*MaxBatch + k
			ds[k] = decision(TestNHSNumber(n%50000), "scr", []string{"dissent", "consent_core"}[i%2], i%300, fmt.Sprintf("bench-%d", n))
		}
		enc, err := EncodeCommand(batch(ds...))
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		res := applyNow(s, []uint64{uint64(i + 1)}, [][]byte{enc})
		if r := res[0].(*commandv1.Result); r.GetCode() != commandv1.Result_CODE_OK {
			b.Fatalf("batch %d: %v %s", i, r.GetCode(), r.GetMessage())
		}
	}
}

// BenchmarkCheckConsents1000Cold checks 1,000 random numbers of a register
// of several million patients with the page cache dropped before each
// check, as on a node whose register is larger than its memory; it shows
// what overlapping the lookups buys there. It needs root (to drop the page
// cache) and a path for the register, which is built on first use (about
// 2.3 GB and a minute for 3 million patients) and kept for the next run:
//
//	CONSENTD_BENCH_COLD_DB=/var/tmp/cold.db go test -run x -bench 1000Cold ./fsm
func BenchmarkCheckConsents1000Cold(b *testing.B) {
	path, nums := coldRegister(b)
	// cache=warm reads the same register with its pages resident: what the
	// read-ahead costs where it cannot help.
	for _, bc := range []struct {
		cold      bool
		workers   int
		readAhead bool
	}{
		{true, 1, false}, {true, DefaultCheckWorkers, false}, {true, 1, true}, {true, DefaultCheckWorkers, true},
		{false, DefaultCheckWorkers, false}, {false, DefaultCheckWorkers, true},
	} {
		cache := map[bool]string{true: "cold", false: "warm"}[bc.cold]
		b.Run(fmt.Sprintf("cache=%s/workers=%d/readahead=%t", cache, bc.workers, bc.readAhead), func(b *testing.B) {
			s, err := Open(Config{Path: path, CheckWorkers: bc.workers, NoCheckReadAhead: !bc.readAhead})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			q := make([]string, 1000)
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				for j := range q {
					q[j] = nums[rand.IntN(len(nums))]
				}
				if !bc.cold {
					// Resident: this check's pages, and the tree above them.
					if _, _, err := s.CheckConsents("scr", q); err != nil {
						b.Fatal(err)
					}
				} else {
					dropCaches(b)
				}
				b.StartTimer()
				if _, _, err := s.CheckConsents("scr", q); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// coldRegister is the path of the cold benchmarks' register, built on first
// use, and the patients in it; it skips without root or a path.
func coldRegister(b *testing.B) (path string, nums []string) {
	path = os.Getenv("CONSENTD_BENCH_COLD_DB")
	if path == "" || os.Geteuid() != 0 {
		b.Skip("needs root and CONSENTD_BENCH_COLD_DB (a path for the register)")
	}
	patients := 3_000_000
	if v := os.Getenv("CONSENTD_BENCH_COLD_PATIENTS"); v != "" {
		var err error
		if patients, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	nums = NHSNumbersFrom(900_000_000, patients) // bench/scale's block
	if _, err := os.Stat(path); err != nil {
		buildColdRegister(b, path, nums)
	}
	return path, nums
}

func dropCaches(b *testing.B) {
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkApplyBatchCold applies one entry of 500 decisions, for patients
// spread over a register of several million, with the page cache dropped
// before each (cache=cold), as the second pass of a large load or a
// follower replaying onto a register larger than memory does; cache=warm
// has the batch's pages resident, which is what the read-ahead costs where
// it cannot help. The same register and environment as
// BenchmarkCheckConsents1000Cold:
//
//	CONSENTD_BENCH_COLD_DB=/var/tmp/cold.db go test -run x -bench ApplyBatchCold ./fsm
//
// It commits after each batch (untimed), so the register grows by 500
// decisions an iteration.
func BenchmarkApplyBatchCold(b *testing.B) {
	path, nums := coldRegister(b)
	tag := rand.Uint64() // request ids stay new across runs on a kept register
	for _, bc := range []struct{ cold, readAhead bool }{
		{true, false}, {true, true}, {false, false}, {false, true},
	} {
		cache := map[bool]string{true: "cold", false: "warm"}[bc.cold]
		b.Run(fmt.Sprintf("cache=%s/readahead=%t", cache, bc.readAhead), func(b *testing.B) {
			s, err := Open(Config{Path: path, NoApplyReadAhead: !bc.readAhead})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				picked := map[int]bool{}
				var ds []*commandv1.RecordDecision
				for len(ds) < 500 {
					j := rand.IntN(len(nums))
					if picked[j] {
						continue
					}
					picked[j] = true
					ds = append(ds, decision(nums[j], "scr", "dissent", 2, fmt.Sprintf("cold-%d-%x-%d", j, tag, i)))
				}
				env := &commandv1.Envelope{Body: &commandv1.Envelope_RecordDecisions{RecordDecisions: &commandv1.RecordDecisions{Decisions: ds}}}
				data := [][]byte{encode(b, env)}
				idx := []uint64{s.AppliedIndex() + 1}
				if bc.cold {
					dropCaches(b)
				} else {
					touchKeys(b, s, collectApplyKeys(idx, []*commandv1.Envelope{env}, -1))
				}
				b.StartTimer()
				res := s.Apply(idx, data)
				b.StopTimer()
				if r := res[0].(*commandv1.Result); r.GetCode() != commandv1.Result_CODE_OK {
					b.Fatalf("apply: %v %s", r.GetCode(), r.GetMessage())
				}
				s.Commit()
				b.StartTimer()
			}
		})
	}
}

// touchKeys looks every key up, so that their pages are resident.
func touchKeys(b *testing.B, s *Store, k *applyKeys) {
	err := s.view(func(tx *bolt.Tx, _ uint64) error {
		for _, bk := range k.buckets() {
			c := tx.Bucket(bk.name).Cursor()
			for _, key := range bk.keys {
				c.Seek(key)
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

// buildColdRegister builds beside path and renames, so that an interrupted
// build is not taken for a register on the next run.
func buildColdRegister(b testing.TB, path string, nums []string) {
	tmp := path + ".building"
	os.Remove(tmp)
	s, err := Open(Config{Path: tmp})
	if err != nil {
		b.Fatal(err)
	}
	const batch = 500
	var index uint64
	for i := 0; i < len(nums); i += batch {
		var idx []uint64
		var data [][]byte
		for j := i; j < min(i+batch, len(nums)); j++ {
			index++
			idx = append(idx, index)
			state := "consent_core"
			if j%20 == 0 {
				state = "dissent"
			}
			data = append(data, encode(b, record(decision(nums[j], "scr", state, 1, fmt.Sprintf("cold-%d", j)))))
		}
		applyNow(s, idx, data)
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		b.Fatal(err)
	}
}

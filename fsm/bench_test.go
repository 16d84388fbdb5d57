package fsm

import (
	"fmt"
	"testing"

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
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := s.CheckConsents("scr", nums); err != nil {
			b.Fatal(err)
		}
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

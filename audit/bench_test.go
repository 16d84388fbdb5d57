package audit

import (
	"context"
	"fmt"
	"runtime"
	"testing"
)

// BenchmarkAppendParallel appends from many goroutines, as a busy node's
// request handlers would, and reports how well group commit shares fsyncs.
// Run it on the disk the log will live on: t.TempDir may be tmpfs elsewhere.
func BenchmarkAppendParallel(b *testing.B) {
	for _, callers := range []int{1, 16, 128} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			l := openTest(b, Config{}, nil)
			e := testEntry(0)
			e.NHSNumbers = []string{"9990000018", "9000000009"}
			base := l.fsyncs.Load()
			// RunParallel starts parallelism×GOMAXPROCS goroutines.
			b.SetParallelism(max(1, callers/runtime.GOMAXPROCS(0)))
			b.ResetTimer()
			if callers == 1 {
				for b.Loop() {
					if err := l.Append(context.Background(), e); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := l.Append(context.Background(), e); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
			b.ReportMetric(float64(l.fsyncs.Load()-base)/float64(b.N), "fsyncs/append")
		})
	}
}

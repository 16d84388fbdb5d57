package jepsen

import (
	"bytes"
	"testing"
)

// FuzzHistory feeds arbitrary history.jsonl contents through the decoder
// and every checker, as `consent-jepsen -check` does with a saved (possibly
// truncated or hand-edited) report: a bad report must give an error or a
// verdict, never a panic.
func FuzzHistory(f *testing.F) {
	f.Add([]byte(`{"index":0,"type":"invoke","process":1,"client":"c1","node":"n1","proto":"grpc","f":"write","nhs":"9990000018","kind":"scr","time":1,"token":"t1","state":"dissent","requestId":"r1"}
{"index":0,"type":"ok","process":1,"client":"c1","node":"n1","proto":"grpc","f":"write","nhs":"9990000018","kind":"scr","time":5,"decisionId":"d1","version":1,"changed":true}
{"index":1,"type":"invoke","process":2,"client":"c2","node":"n2","proto":"rest","f":"read","nhs":"9990000018","kind":"scr","time":6}
{"index":1,"type":"ok","process":2,"client":"c2","node":"n2","proto":"rest","f":"read","nhs":"9990000018","kind":"scr","time":9,"consent":{"kind":"scr","state":"dissent","version":1,"decisionId":"d1"}}
`))
	f.Add([]byte(`{"index":3,"type":"info","time":2}`))
	f.Add([]byte(`{"index":1,"type":"invoke","f":"history","nhs":"9990000018","time":-4}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ops, err := decodeJSONL[Op](bytes.NewReader(data), "history.jsonl")
		if err != nil {
			return
		}
		calls, err := Pair(ops)
		if err != nil {
			return
		}
		for i := 1; i < len(calls); i++ {
			if calls[i].Invoke.Time < calls[i-1].Invoke.Time {
				t.Fatalf("Pair left calls out of invoke order")
			}
		}
		nf := NodeFinal{Status: StatusVal{AppliedIndex: 1, StateDigest: "d", State: "leader"}}
		Check(&Report{
			Run:     RunInfo{Scenario: "fuzz", Nodes: []string{"n1"}, RecoveryBoundMs: 1000, CheckTimeoutMs: 1000},
			History: ops,
			Final:   Final{Nodes: map[string]NodeFinal{"n1": nf}},
			Logs:    map[string]string{},
		})
	})
}

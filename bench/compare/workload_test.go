package main

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestGhzWorkloads(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Preload, cfg.WritePool = 3, 2
	c := &consentdCluster{cfg: cfg, nonce: "t"}
	e := &etcdCluster{cfg: cfg, nonce: "t"}
	for _, tc := range []struct {
		sys  system
		op   string
		call string
		want []string // the messages, one JSON object each, keys sorted
	}{
		{c, "write", "consent.v1.ConsentService.RecordDecision", []string{
			`{"channel":"in_person","decisionMaker":{"type":"patient"},"kind":"scr","nhsNumber":"` + writePatient(cfg, 0) + `","requestId":"{{newUUID}}","state":"consent_core"}`,
			`{"channel":"in_person","decisionMaker":{"type":"patient"},"kind":"scr","nhsNumber":"` + writePatient(cfg, 1) + `","requestId":"{{newUUID}}","state":"consent_core"}`,
			`{"channel":"in_person","decisionMaker":{"type":"patient"},"kind":"scr","nhsNumber":"` + writePatient(cfg, 0) + `","requestId":"{{newUUID}}","state":"dissent"}`,
			`{"channel":"in_person","decisionMaker":{"type":"patient"},"kind":"scr","nhsNumber":"` + writePatient(cfg, 1) + `","requestId":"{{newUUID}}","state":"dissent"}`,
		}},
		{c, "read", "consent.v1.ConsentService.GetConsents", []string{
			`{"nhsNumber":"` + readPatient(0) + `"}`, `{"nhsNumber":"` + readPatient(1) + `"}`, `{"nhsNumber":"` + readPatient(2) + `"}`,
		}},
		{c, "stale", "consent.v1.ConsentService.GetConsents", []string{
			`{"consistency":"stale","nhsNumber":"` + readPatient(0) + `"}`, `{"consistency":"stale","nhsNumber":"` + readPatient(1) + `"}`,
			`{"consistency":"stale","nhsNumber":"` + readPatient(2) + `"}`,
		}},
		{e, "write", "etcdserverpb.KV.Put", []string{
			`{"key":"bench/w/{{newUUID}}","value":"` + etcdValue(100) + `"}`,
		}},
		{e, "read", "etcdserverpb.KV.Range", []string{`{"key":"bench/r/000000"}`, `{"key":"bench/r/000001"}`, `{"key":"bench/r/000002"}`}},
		{e, "stale", "etcdserverpb.KV.Range", []string{
			`{"key":"bench/r/000000","serializable":true}`, `{"key":"bench/r/000001","serializable":true}`, `{"key":"bench/r/000002","serializable":true}`,
		}},
	} {
		t.Run(tc.sys.Name()+"-"+tc.op, func(t *testing.T) {
			w, err := tc.sys.Workload(tc.op, "grpc")
			if err != nil {
				t.Fatal(err)
			}
			if w.Call != tc.call {
				t.Errorf("call %s, want %s", w.Call, tc.call)
			}
			var msgs []json.RawMessage
			if strings.HasPrefix(w.Data, "[") {
				if err := json.Unmarshal([]byte(w.Data), &msgs); err != nil {
					t.Fatal(err)
				}
			} else {
				msgs = []json.RawMessage{json.RawMessage(w.Data)}
			}
			var got []string
			for _, m := range msgs {
				var v any
				json.Unmarshal(m, &v)
				b, _ := json.Marshal(v)
				got = append(got, string(b))
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("messages:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
	if len(etcdValue(100)) != 100 {
		t.Errorf("etcd value is %d bytes, want 100", len(etcdValue(100)))
	}
}

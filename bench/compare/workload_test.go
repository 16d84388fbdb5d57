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

func TestToolCommand(t *testing.T) {
	cfg := DefaultConfig()
	cfg.GhzBin, cfg.WrkBin = "ghz", "wrk"
	target := node{ID: "n1", GRPCAddr: "127.0.0.1:9081", HTTPAddr: "127.0.0.1:8081"}
	for _, tc := range []struct {
		name string
		s    runSpec
		want string
	}{
		{"ghz by reflection", runSpec{Protocol: "grpc", Conc: 64, Rep: 1, Target: target, WorkFile: "/w.json", RawFile: "/r.json",
			Work: workload{Call: "consent.v1.ConsentService.GetConsents"}},
			"ghz --insecure --call consent.v1.ConsentService.GetConsents --data-file /w.json -c 64 --connections 16 -z 10s -t 10s -O json -o /r.json 127.0.0.1:9081"},
		{"ghz with the etcd subset, a warm-up", runSpec{Protocol: "grpc", Conc: 4, Rep: 0, Target: target, WorkFile: "/w.json", RawFile: "/r.json",
			Work: workload{Call: "etcdserverpb.KV.Put", Proto: "/p/rpc.proto", ImportPaths: []string{"/p"}}},
			"ghz --insecure --proto /p/rpc.proto --import-paths /p --call etcdserverpb.KV.Put --data-file /w.json -c 4 --connections 4 -z 2s -t 10s -O json -o /r.json 127.0.0.1:9081"},
		{"wrk passes the run id to the script", runSpec{Protocol: "rest", Conc: 256, Rep: 2, Target: target, WorkFile: "/w.lua", RunID: "c256-r2"},
			"wrk -t 2 -c 256 -d 10s --timeout 10s --latency -s /w.lua http://127.0.0.1:8081/ -- c256-r2"},
		{"wrk: no more threads than connections", runSpec{Protocol: "rest", Conc: 1, Rep: 1, Target: target, WorkFile: "/w.lua", RunID: "c1-r1"},
			"wrk -t 1 -c 1 -d 10s --timeout 10s --latency -s /w.lua http://127.0.0.1:8081/ -- c1-r1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin, args := toolCommand(cfg, tc.s)
			if got := bin + " " + strings.Join(args, " "); got != tc.want {
				t.Errorf("toolCommand:\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

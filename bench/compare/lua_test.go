package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestLuaString(t *testing.T) {
	for in, want := range map[string]string{
		"plain":       `"plain"`,
		`a"b\c`:       `"a\"b\\c"`,
		"line\nbreak": `"line\nbreak"`,
	} {
		if got := luaString(in); got != want {
			t.Errorf("luaString(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestRenderLua(t *testing.T) {
	pool := []string{"9990000018", "9990000026"}
	for _, tc := range []struct {
		name     string
		render   func() (string, error)
		contains []string
		lacks    []string
	}{
		{
			name:   "consentd write",
			render: func() (string, error) { return consentdLua("write", "n0nce", pool) },
			contains: []string{`local nonce = "n0nce"`, `"9990000018",`, `"9990000026",`, `"/v1/patients/" .. pool[i] .. "/decisions"`,
				`'","channel":"in_person","decisionMaker":{"type":"patient"},"requestId":"'`, "function done(", "BENCH {"},
			lacks: []string{"b64chars"},
		},
		{
			name:     "consentd read",
			render:   func() (string, error) { return consentdLua("read", "n0nce", pool) },
			contains: []string{`local suffix = ""`, `wrk.format("GET"`},
		},
		{
			name:     "consentd stale",
			render:   func() (string, error) { return consentdLua("stale", "n0nce", pool) },
			contains: []string{`local suffix = "?consistency=stale"`},
		},
		{
			name:     "etcd write",
			render:   func() (string, error) { return etcdLua("write", "n0nce", "0123456789", nil) },
			contains: []string{`local value = "0123456789"`, "b64chars", `"/v3/kv/put"`, `local key = "bench/w/" .. nonce`},
		},
		{
			name:     "etcd read: keys base64 already",
			render:   func() (string, error) { return etcdLua("read", "n0nce", "", []string{"bench/r/000000"}) },
			contains: []string{`"YmVuY2gvci8wMDAwMDA=",`, `local extra = ""`, `"/v3/kv/range"`},
			lacks:    []string{"b64chars"},
		},
		{
			name:     "etcd serializable",
			render:   func() (string, error) { return etcdLua("stale", "n0nce", "", []string{"k"}) },
			contains: []string{`local extra = ",\"serializable\":true"`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.render()
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tc.contains {
				if !strings.Contains(got, s) {
					t.Errorf("no %s in:\n%s", s, got)
				}
			}
			for _, s := range tc.lacks {
				if strings.Contains(got, s) {
					t.Errorf("%s in:\n%s", s, got)
				}
			}
		})
	}
	if _, err := consentdLua("delete", "n", pool); err == nil {
		t.Error("consentdLua(delete): no error")
	}
	if _, err := etcdLua("delete", "n", "v", nil); err == nil {
		t.Error("etcdLua(delete): no error")
	}
}

// seenRequests records what wrk sent: a writes' ids or keys, bodies that
// are not JSON, and every path.
type seenRequests struct {
	mu     sync.Mutex
	ids    map[string]int
	states map[string]map[string]int // patient -> state -> count
	bad    []string
	paths  map[string]int
}

func (s *seenRequests) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.paths[r.Method+" "+r.URL.Path]++
	if len(body) > 0 {
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			s.bad = append(s.bad, string(body))
		}
		id, _ := m["requestId"].(string)
		if k, ok := m["key"].(string); ok && r.URL.Path == "/v3/kv/put" {
			raw, err := base64.StdEncoding.DecodeString(k)
			if err != nil {
				s.bad = append(s.bad, "key not base64: "+string(body))
			}
			id = string(raw)
			if v, err := base64.StdEncoding.DecodeString(m["value"].(string)); err != nil || len(v) != 100 {
				s.bad = append(s.bad, "value: "+string(body))
			}
		}
		if id != "" {
			s.ids[id]++
		}
		if st, ok := m["state"].(string); ok {
			if s.states[r.URL.Path] == nil {
				s.states[r.URL.Path] = map[string]int{}
			}
			s.states[r.URL.Path][st]++
		}
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprint(w, "{}")
}

// TestLuaScriptsUnderWrk runs each script in wrk against a recorder: the
// scripts parse, every write is unique across runs, bodies are JSON, the
// BENCH line parses.
func TestLuaScriptsUnderWrk(t *testing.T) {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		t.Skip("wrk not installed (bench/compare.sh installs it)")
	}
	cfg := DefaultConfig()
	cfg.Preload, cfg.WritePool = 10, 10
	c := &consentdCluster{cfg: cfg, nonce: "t"}
	e := &etcdCluster{cfg: cfg, nonce: "t"}
	for _, tc := range []struct {
		sys    system
		op     string
		prefix string
	}{
		{c, "write", "POST /v1/patients/"},
		{c, "read", "GET /v1/patients/"},
		{c, "stale", "GET /v1/patients/"},
		{e, "write", "POST /v3/kv/put"},
		{e, "read", "POST /v3/kv/range"},
		{e, "stale", "POST /v3/kv/range"},
	} {
		t.Run(tc.sys.Name()+"-"+tc.op, func(t *testing.T) {
			w, err := tc.sys.Workload(tc.op, "rest")
			if err != nil {
				t.Fatal(err)
			}
			script := filepath.Join(t.TempDir(), "s.lua")
			if err := os.WriteFile(script, []byte(w.Lua), 0o644); err != nil {
				t.Fatal(err)
			}
			rec := &seenRequests{ids: map[string]int{}, paths: map[string]int{}, states: map[string]map[string]int{}}
			srv := httptest.NewServer(rec)
			defer srv.Close()
			// Two runs of the same script, as the warm-up and a repetition
			// are: their writes must not repeat each other's either.
			var res toolResult
			for _, runID := range []string{"c4-r0", "c4-r1"} {
				out, err := exec.Command(wrk, "-t", "2", "-c", "4", "-d", "1s", "--latency", "-s", script, srv.URL+"/", "--", runID).CombinedOutput()
				if err != nil {
					t.Fatalf("wrk: %v\n%s", err, out)
				}
				r, err := parseWrk(string(out))
				if err != nil {
					t.Fatalf("%v\n%s", err, out)
				}
				if r.OK < 100 || r.Errors != 0 {
					t.Errorf("wrk result %+v\n%s", r, out)
				}
				res.Requests += r.Requests
			}
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if len(rec.bad) > 0 {
				t.Errorf("%d bad bodies, first %s", len(rec.bad), rec.bad[0])
			}
			for p := range rec.paths {
				if !strings.HasPrefix(p, tc.prefix) {
					t.Errorf("request %s, want %s...", p, tc.prefix)
				}
			}
			if tc.op == "write" {
				if uint64(len(rec.ids)) < res.Requests {
					t.Errorf("%d unique ids for %d requests", len(rec.ids), res.Requests)
				}
				for id, n := range rec.ids {
					if n > 1 {
						t.Errorf("id %s sent %d times", id, n)
						break
					}
				}
				// consentd: a patient's decisions alternate, so both states reach it.
				for p, st := range rec.states {
					if len(st) != 2 && st["consent_core"]+st["dissent"] > 2 {
						t.Errorf("%s: states %v, want both", p, st)
					}
				}
			} else if len(rec.paths) < 5 && tc.sys.Name() == "consentd" {
				t.Errorf("reads spread over %d paths, want the pool of 10", len(rec.paths))
			}
		})
	}
}

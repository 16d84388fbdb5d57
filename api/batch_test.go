package api

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lmc-consent/consentd/audit"
	"github.com/lmc-consent/consentd/fsm"
	consentv1 "github.com/lmc-consent/consentd/proto/consent/v1"
	"github.com/lmc-consent/consentd/raftnode"
)

const batchPath = "/v1/decisions:batchRecord"

// batchItem is one decision as a bulk loader would send it with curl.
func batchItem(nhs, reqID string) map[string]any {
	return map[string]any{"nhsNumber": nhs, "kind": "scr", "state": "dissent", "channel": "import",
		"decisionMaker": map[string]any{"type": "patient"}, "effectiveFrom": "2026-01-05T09:30:00Z",
		"reason": "bulk load from the practice's system", "requestId": reqID}
}

func batchBody(t testing.TB, items ...map[string]any) string {
	t.Helper()
	b, err := json.Marshal(map[string]any{"decisions": items})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRecordDecisionsOverREST(t *testing.T) {
	forEachBackend(t, func(t *testing.T, h *harness) {
		body := `{"decisions":[
			{"nhsNumber":"9990000018","kind":"scr","state":"dissent","channel":"import","decisionMaker":{"type":"patient"},"requestId":"load-1"},
			{"nhsNumber":"9000000009","kind":"gp_secondary_use","state":"dissent","channel":"import","decisionMaker":{"type":"patient"},"requestId":"load-2"},
			{"nhsNumber":"9990000026","kind":"scr","state":"consent_core","channel":"paper_form","decisionMaker":{"type":"proxy","proxyRole":"lpa_health_welfare"},"requestId":"load-3","expectedVersion":"0"}]}`
		got := h.do("POST", batchPath, body)
		if got.code != 200 {
			t.Fatalf("batch: %d %s", got.code, got.raw)
		}
		results := got.list("results")
		if len(results) != 3 || got.body["revision"] != "1" {
			t.Fatalf("batch answer %s", got.raw)
		}
		for i, want := range []string{"9990000018", "9000000009", "9990000026"} {
			r := results[i].(map[string]any)
			d := r["decision"].(map[string]any)
			if d["nhsNumber"] != want || d["requestId"] != fmt.Sprintf("load-%d", i+1) || d["revision"] != "1" || d["version"] != "1" ||
				r["duplicate"] != false || r["consent"].(map[string]any)["version"] != "1" {
				t.Fatalf("result %d out of order or wrong: %v", i, r)
			}
		}
		if c := h.do("GET", "/v1/patients/9000000009/consents", ""); c.list("consents")[1].(map[string]any)["state"] != "dissent" {
			t.Fatalf("after the batch: %s", c.raw)
		}

		// A retry of the whole batch replays every item.
		again := h.do("POST", batchPath, body)
		if again.code != 200 || len(again.list("results")) != 3 {
			t.Fatalf("retry: %d %s", again.code, again.raw)
		}
		for i, r := range again.list("results") {
			if r.(map[string]any)["duplicate"] != true {
				t.Fatalf("retried item %d not a duplicate: %v", i, r)
			}
		}

		// gRPC takes the same batch.
		resp, err := h.rpc.RecordDecisions(context.Background(), &consentv1.RecordDecisionsRequest{Decisions: []*consentv1.RecordDecisionRequest{
			{NhsNumber: "9990000018", Kind: "scr", State: "consent_core", Channel: "phone", RequestId: "g-1"},
			{NhsNumber: "9000000009", Kind: "scr", State: "dissent", Channel: "phone", RequestId: "g-2"},
		}})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetResults()) != 2 || resp.GetResults()[0].GetDecision().GetVersion() != 2 || resp.GetRevision() != resp.GetResults()[1].GetDecision().GetRevision() {
			t.Fatalf("gRPC batch: %v", resp)
		}
	})
}

func TestRecordDecisionsRefusesBadBatchesWhole(t *testing.T) {
	forEachBackend(t, func(t *testing.T, h *harness) {
		if got := h.do("POST", recordPath("9990000026"), goodBody); got.code != 200 {
			t.Fatalf("setup: %d %s", got.code, got.raw)
		}
		many := make([]map[string]any, fsm.MaxBatch+1)
		for i := range many {
			many[i] = batchItem(fsm.TestNHSNumber(i), fmt.Sprintf("m-%d", i))
		}
		good := func() []map[string]any {
			return []map[string]any{batchItem(fsm.TestNHSNumber(10), "x-0"), batchItem(fsm.TestNHSNumber(11), "x-1"), batchItem(fsm.TestNHSNumber(12), "x-2")}
		}
		with := func(i int, key string, v any) string {
			items := good()
			if v == nil {
				delete(items[i], key)
			} else {
				items[i][key] = v
			}
			return batchBody(t, items...)
		}
		for _, tc := range []struct {
			name, body, field string
			header            []string
			code              int
		}{
			{"empty", `{"decisions":[]}`, "decisions", nil, 400},
			{"no body", `{}`, "decisions", nil, 400},
			{"over 1,000", batchBody(t, many...), "decisions", nil, 400},
			{"bad NHS number", with(1, "nhsNumber", "9990000017"), "decisions[1].nhs_number", nil, 400},
			{"unknown state", with(2, "state", "maybe"), "decisions[2].state", nil, 400},
			{"no request id", with(0, "requestId", nil), "decisions[0].request_id", nil, 400},
			{"request id in the header", batchBody(t, good()...), "request_id", []string{"X-Request-ID", "h-1"}, 400},
			{"same patient twice", with(2, "nhsNumber", fsm.TestNHSNumber(10)), "decisions[2].nhs_number", nil, 400},
			{"same request id twice", with(1, "requestId", "x-0"), "decisions[1].request_id", nil, 400},
			{"future effectiveFrom", with(1, "effectiveFrom", "2999-01-01T00:00:00Z"), "decisions[1].effective_from", nil, 400},
			{"recordedBy in an item", with(1, "recordedBy", map[string]any{"odsCode": "Y00002"}), "recordedBy", nil, 400},
		} {
			t.Run(tc.name, func(t *testing.T) {
				applies, _, _ := h.fake.counts()
				got := h.do("POST", batchPath, tc.body, tc.header...)
				if got.code != tc.code || got.violation() != tc.field {
					t.Fatalf("%d field %q: %s, want %d naming %s", got.code, got.violation(), got.raw, tc.code, tc.field)
				}
				if now, _, _ := h.fake.counts(); now != applies {
					t.Fatal("a batch refused by the API reached the cluster")
				}
			})
		}

		// Refused by the register (state, not shape): nothing written.
		for _, tc := range []struct {
			name, body, field string
			code              int
		}{
			{"expectedVersion mismatch", with(1, "expectedVersion", "5"), "decisions[1].expected_version", 409},
			{"request id reused", func() string {
				items := good()
				items[2]["requestId"] = "r-1" // goodBody's, for another patient
				return batchBody(t, items...)
			}(), "decisions[2].request_id", 409},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got := h.do("POST", batchPath, tc.body)
				// As for single writes, a 409 names the field in its message.
				if got.code != tc.code || !strings.HasPrefix(fmt.Sprint(got.body["message"]), tc.field+": ") {
					t.Fatalf("%d field %q: %s, want %d naming %s", got.code, got.violation(), got.raw, tc.code, tc.field)
				}
				for i := 10; i <= 12; i++ {
					if c := h.do("GET", "/v1/patients/"+fsm.TestNHSNumber(i)+"/consents", ""); c.list("consents")[0].(map[string]any)["version"] != "0" {
						t.Fatalf("patient %d written by a refused batch: %s", i, c.raw)
					}
				}
			})
		}
	})
}

// A batch of the documented maximum, as JSON, fits the default body limit.
func TestRecordDecisionsOfAThousandOverREST(t *testing.T) {
	h := newHarness(t, fsmBackend)
	items := make([]map[string]any, fsm.MaxBatch)
	for i := range items {
		items[i] = batchItem(fsm.TestNHSNumber(i), fmt.Sprintf("thousand-%04d", i))
	}
	body := batchBody(t, items...)
	if len(body) > int(h.cfg.MaxBodyBytes) {
		t.Fatalf("a %d-item batch is %d bytes, over the default body limit %d", fsm.MaxBatch, len(body), h.cfg.MaxBodyBytes)
	}
	got := h.do("POST", batchPath, body)
	if got.code != 200 || len(got.list("results")) != fsm.MaxBatch {
		t.Fatalf("%d %.300s", got.code, got.raw)
	}
	last := got.list("results")[fsm.MaxBatch-1].(map[string]any)["decision"].(map[string]any)
	if last["nhsNumber"] != fsm.TestNHSNumber(fsm.MaxBatch-1) || last["requestId"] != "thousand-0999" {
		t.Fatalf("last result %v", last)
	}
}

// A batch that would not fit the node-to-node message a follower forwards
// it in is refused before proposing, not lost on the way to the leader.
func TestRecordDecisionsBoundedByTheForwardedMessage(t *testing.T) {
	h := newHarness(t, fakeBackend, func(c *Config) { c.MaxRecvMsgSize = 64 << 10 })
	items := make([]map[string]any, 400)
	for i := range items {
		items[i] = batchItem(fsm.TestNHSNumber(i), fmt.Sprintf("f-%d", i))
	}
	got := h.do("POST", batchPath, batchBody(t, items...))
	if got.code != 400 || got.violation() != "decisions" || !strings.Contains(fmt.Sprint(got.body["message"]), "fewer decisions") {
		t.Fatalf("%d %s", got.code, got.raw)
	}
	if applies, _, _ := h.fake.counts(); applies != 0 {
		t.Fatal("an oversized batch reached the cluster")
	}
}

func TestRecordDecisionsUnknownOutcomeIsUnknown(t *testing.T) {
	h := newHarness(t, fakeBackend)
	body := batchBody(t, batchItem(patient, "u-1"))
	for _, tc := range []struct {
		name    string
		err     error
		http    int
		grpc    codes.Code
		unknown bool
	}{
		{"leadership lost", fmt.Errorf("%w: leadership lost", raftnode.ErrOutcomeUnknown), 503, codes.Unavailable, true},
		{"timeout after proposing", fmt.Errorf("%w: %w", raftnode.ErrOutcomeUnknown, context.DeadlineExceeded), 504, codes.DeadlineExceeded, true},
		{"not leader", raftnode.ErrNotLeader, 503, codes.Unavailable, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.fake.set(func(f *fakeCluster) { f.applyErr = tc.err })
			defer h.fake.set(func(f *fakeCluster) { f.applyErr = nil })
			got := h.do("POST", batchPath, body)
			if got.code != tc.http {
				t.Fatalf("REST: %d %s", got.code, got.raw)
			}
			if tc.unknown && !strings.Contains(fmt.Sprint(got.body["message"]), "same request_id is safe") {
				t.Fatalf("an unknown outcome must say retrying is safe: %s", got.raw)
			}
			_, err := h.rpc.RecordDecisions(context.Background(), &consentv1.RecordDecisionsRequest{Decisions: []*consentv1.RecordDecisionRequest{
				{NhsNumber: patient, Kind: "scr", State: "dissent", Channel: "phone", RequestId: "u-1"}}})
			if status.Code(err) != tc.grpc {
				t.Fatalf("gRPC: %v, want %s", err, tc.grpc)
			}
		})
	}
}

func TestRecordDecisionsAuthorisationAndAccessLog(t *testing.T) {
	w := newTLSWorld(t)
	body := batchBody(t, batchItem(patient, "a-1"), batchItem("9000000009", "a-2"))
	if got := w.rest("reader", "POST", batchPath, body); got.code != 403 {
		t.Fatalf("reader batch: %d %s", got.code, got.raw)
	}
	_, err := consentv1.NewConsentServiceClient(w.grpc("reader")).RecordDecisions(context.Background(), &consentv1.RecordDecisionsRequest{
		Decisions: []*consentv1.RecordDecisionRequest{{NhsNumber: patient, Kind: "scr", State: "dissent", Channel: "phone", RequestId: "a-3"}}})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("reader gRPC batch: %v", err)
	}
	if applies, _, _ := w.h.fake.counts(); applies != 0 {
		t.Fatal("a refused batch reached the cluster")
	}
	got := w.rest("practice-a", "POST", batchPath, body)
	if got.code != 200 {
		t.Fatalf("practice batch: %d %s", got.code, got.raw)
	}
	if by := got.list("results")[1].(map[string]any)["decision"].(map[string]any)["recordedBy"].(map[string]any); by["odsCode"] != "Y00001" {
		t.Fatalf("recordedBy %v, want the caller's certificate", by)
	}

	entries, _, err := w.access.Query(context.Background(), audit.Filter{NHSNumber: "9000000009"})
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, e := range entries {
		seen = append(seen, fmt.Sprintf("%s %s %s %s %v", e.Operation, e.Caller.Role, e.Outcome, e.Method, e.NHSNumbers))
	}
	want := []string{
		"write reader denied consent.v1.ConsentService/RecordDecisions [9990000018 9000000009]",
		"write practice allowed consent.v1.ConsentService/RecordDecisions [9990000018 9000000009]",
	}
	if strings.Join(seen, "\n") != strings.Join(want, "\n") {
		t.Fatalf("access log:\n%s\nwant:\n%s", strings.Join(seen, "\n"), strings.Join(want, "\n"))
	}
}

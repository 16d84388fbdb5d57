package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lmc-consent/consentd/cluster"
	"github.com/lmc-consent/consentd/fsm"
	consentv1 "github.com/lmc-consent/consentd/proto/consent/v1"
	"github.com/lmc-consent/consentd/raftnode"
)

const patient = "9990000018"

const goodBody = `{"kind":"scr","state":"dissent","channel":"in_person","decisionMaker":{"type":"patient"},"requestId":"r-1"}`

func recordPath(nhs string) string { return "/v1/patients/" + nhs + "/decisions" }

// grpcViolation is the field named by a gRPC error's BadRequest detail.
func grpcViolation(err error) string {
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) > 0 {
			return br.GetFieldViolations()[0].GetField()
		}
	}
	return ""
}

func TestRecordThenRead(t *testing.T) {
	forEachBackend(t, func(t *testing.T, h *harness) {
		rec := h.do("POST", recordPath(patient), goodBody)
		if rec.code != 200 {
			t.Fatalf("record: %d %s", rec.code, rec.raw)
		}
		dec := rec.object("decision")
		for _, field := range []string{"id", "nhsNumber", "effectiveFrom", "recordedAt", "decisionMaker", "recordedBy", "requestId", "revision", "version", "acceptedBy", "enteredInError"} {
			if _, ok := dec[field]; !ok {
				t.Errorf("decision lacks lowerCamelCase %s: %s", field, rec.raw)
			}
		}
		if strings.Contains(string(rec.raw), "nhs_number") || strings.Contains(string(rec.raw), "recorded_at") {
			t.Errorf("snake_case field names in a REST answer: %s", rec.raw)
		}
		if dec["kind"] != "scr" || dec["state"] != "dissent" || dec["version"] != "1" || dec["revision"] != "1" || rec.body["changed"] != true {
			t.Errorf("record response %s", rec.raw)
		}
		if dec["recordedBy"].(map[string]any)["role"] != "unauthenticated" || dec["acceptedBy"] != "t1" {
			t.Errorf("recordedBy/acceptedBy must be stamped by the node: %s", rec.raw)
		}
		if c := rec.object("consent"); c["state"] != "dissent" || c["version"] != "1" {
			t.Errorf("consent after record: %v", c)
		}

		got := h.do("GET", "/v1/patients/"+patient+"/consents", "")
		if got.code != 200 || got.body["nhsNumber"] != patient || got.body["revision"] != "1" {
			t.Fatalf("read: %d %s", got.code, got.raw)
		}
		consents := got.list("consents")
		if len(consents) != len(fsm.Kinds()) {
			t.Fatalf("%d kinds, want every kind", len(consents))
		}
		if first := consents[0].(map[string]any); first["kind"] != "scr" || first["state"] != "dissent" || first["version"] != "1" {
			t.Fatalf("scr %v", first)
		}
		if read := got.object("read"); read["consistency"] != "linearizable" || read["servedBy"] != "t1" {
			t.Fatalf("default read not labelled linearizable: %v", read)
		}

		// The same over gRPC.
		ctx := context.Background()
		grec, err := h.rpc.RecordDecision(ctx, &consentv1.RecordDecisionRequest{NhsNumber: patient, Kind: "gp_secondary_use",
			State: "dissent", Channel: "phone", RequestId: "g-1", EffectiveFrom: timestamppb.New(time.Now().Add(-time.Hour))})
		if err != nil {
			t.Fatal(err)
		}
		if grec.GetDecision().GetRevision() != 2 || grec.GetDecision().GetDecisionMaker().GetType() != "patient" {
			t.Fatalf("gRPC record: %v", grec)
		}
		gget, err := h.rpc.GetConsents(ctx, &consentv1.GetConsentsRequest{NhsNumber: patient})
		if err != nil {
			t.Fatal(err)
		}
		if gget.GetRevision() != 2 || gget.GetConsents()[1].GetState() != "dissent" || gget.GetConsents()[1].GetVersion() != 1 {
			t.Fatalf("gRPC read: %v", gget)
		}

		hist := h.do("GET", "/v1/patients/"+patient+"/decisions?kind=scr&pageSize=10", "")
		if hist.code != 200 || len(hist.list("decisions")) != 1 {
			t.Fatalf("history %d %s", hist.code, hist.raw)
		}
		check := h.do("POST", "/v1/consents:check", `{"kind":"scr","nhsNumbers":["`+patient+`","9000000009"]}`)
		results := check.list("results")
		if check.code != 200 || len(results) != 2 || results[0].(map[string]any)["state"] != "dissent" || results[1].(map[string]any)["state"] != "implied_core" {
			t.Fatalf("check %d %s", check.code, check.raw)
		}
	})
}

func TestUnknownPatientGetsDefaults(t *testing.T) {
	forEachBackend(t, func(t *testing.T, h *harness) {
		got := h.do("GET", "/v1/patients/9000000009/consents", "")
		if got.code != 200 || len(got.list("consents")) != len(fsm.Kinds()) {
			t.Fatalf("unknown patient: %d %s", got.code, got.raw)
		}
		for i, c := range got.list("consents") {
			m := c.(map[string]any)
			if m["version"] != "0" || m["state"] != fsm.Kinds()[i].DefaultState || m["kind"] != fsm.Kinds()[i].Name {
				t.Errorf("%v, want %s at its default, version 0", m, fsm.Kinds()[i].Name)
			}
		}
		g, err := h.rpc.GetConsents(context.Background(), &consentv1.GetConsentsRequest{NhsNumber: "9000000009"})
		if err != nil || len(g.GetConsents()) != len(fsm.Kinds()) || g.GetConsents()[0].GetState() != "implied_core" {
			t.Fatalf("gRPC unknown patient: %v %v", g, err)
		}
	})
}

func TestBadInputIsRefusedAndNothingApplied(t *testing.T) {
	forEachBackend(t, func(t *testing.T, h *harness) {
		future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		for _, tc := range []struct {
			name, path, body, field string
			code                    int
		}{
			{"wrong check digit", recordPath("9990000017"), goodBody, "nhs_number", 400},
			{"letters", recordPath("99900000AB"), goodBody, "nhs_number", 400},
			{"unknown kind", recordPath(patient), `{"kind":"ndop","state":"dissent","channel":"phone"}`, "kind", 400},
			{"unknown state", recordPath(patient), `{"kind":"scr","state":"maybe","channel":"phone"}`, "state", 400},
			{"future effectiveFrom", recordPath(patient), `{"kind":"scr","state":"dissent","channel":"phone","effectiveFrom":"` + future + `"}`, "effective_from", 400},
			{"unknown channel", recordPath(patient), `{"kind":"scr","state":"dissent","channel":"fax"}`, "channel", 400},
			{"proxy without role", recordPath(patient), `{"kind":"scr","state":"dissent","channel":"phone","decisionMaker":{"type":"proxy"}}`, "decision_maker.proxy_role", 400},
			{"unknown JSON field", recordPath(patient), `{"kind":"scr","state":"dissent","channel":"phone","odsCode":"X"}`, "odsCode", 400},
			{"misspelt expectedVersion", recordPath(patient), `{"kind":"scr","state":"dissent","channel":"phone","expectVersion":"3"}`, "expectVersion", 400},
			{"wrong JSON type", recordPath(patient), `{"kind":7,"state":"dissent","channel":"phone"}`, "kind", 400},
			{"malformed JSON", recordPath(patient), `{"kind":`, "", 400},
			{"bad entered-in-error number", "/v1/patients/9990000017/decisions/x:enteredInError", `{}`, "nhs_number", 400},
			{"oversized body", recordPath(patient), `{"reason":"` + strings.Repeat("x", int(DefaultConfig().MaxBodyBytes)+6<<10) + `"}`, "", 413},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before, _, _ := h.fake.counts()
				got := h.do("POST", tc.path, tc.body)
				if got.code != tc.code {
					t.Fatalf("status %d, want %d: %s", got.code, tc.code, got.raw)
				}
				if _, ok := got.body["message"]; !ok {
					t.Fatalf("error body is not {code,message,details}: %s", got.raw)
				}
				if _, ok := got.body["details"]; !ok {
					t.Fatalf("error body is not {code,message,details}: %s", got.raw)
				}
				if tc.field != "" && got.violation() != tc.field {
					t.Fatalf("field violation %q, want %q: %s", got.violation(), tc.field, got.raw)
				}
				if after, _, _ := h.fake.counts(); after != before {
					t.Fatal("invalid input reached the cluster")
				}
			})
		}
		// Chunked, so no Content-Length gives the size away.
		big := io.MultiReader(strings.NewReader(`{"reason":"`), strings.NewReader(strings.Repeat("x", int(h.cfg.MaxBodyBytes)+6<<10)), strings.NewReader(`"}`))
		resp, err := http.Post(h.base+recordPath(patient), "application/json", big)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 413 || resp.Request.ContentLength > 0 {
			t.Fatalf("chunked oversized body: %d", resp.StatusCode)
		}
		if got := h.do("POST", recordPath(patient), `{"reason":"`+strings.Repeat("x", int(h.cfg.MaxBodyBytes)+6<<10)+`"}`); got.body["code"] != float64(8) ||
			!strings.Contains(fmt.Sprint(got.body["message"]), fmt.Sprint(h.cfg.MaxBodyBytes)) {
			t.Fatalf("413 body: %s", got.raw)
		}

		_, err = h.rpc.RecordDecision(context.Background(), &consentv1.RecordDecisionRequest{NhsNumber: "9990000017", Kind: "scr", State: "dissent", Channel: "phone"})
		if status.Code(err) != codes.InvalidArgument || grpcViolation(err) != "nhs_number" {
			t.Fatalf("gRPC bad number: %v (field %q)", err, grpcViolation(err))
		}
		_, err = h.rpc.RecordDecision(context.Background(), &consentv1.RecordDecisionRequest{NhsNumber: patient, Kind: "scr", State: "nope", Channel: "phone"})
		if status.Code(err) != codes.InvalidArgument || grpcViolation(err) != "state" {
			t.Fatalf("gRPC bad state: %v", err)
		}
		if n, _, _ := h.fake.counts(); n != 0 {
			t.Fatalf("%d invalid requests reached the cluster", n)
		}
	})
}

func TestMaxClockSkewCanBeTightened(t *testing.T) {
	h := newHarness(t, fakeBackend, func(c *Config) { c.MaxClockSkew = time.Minute })
	soon := time.Now().Add(2 * time.Minute).UTC().Format(time.RFC3339)
	got := h.do("POST", recordPath(patient), `{"kind":"scr","state":"dissent","channel":"phone","effectiveFrom":"`+soon+`"}`)
	if got.code != 400 || got.violation() != "effective_from" {
		t.Fatalf("2m ahead with a 1m bound: %d %s", got.code, got.raw)
	}
}

func TestCheckConsentsBatchLimits(t *testing.T) {
	forEachBackend(t, func(t *testing.T, h *harness) {
		nums := make([]string, 1001)
		for i := range nums {
			nums[i] = patient
		}
		b, _ := json.Marshal(map[string]any{"kind": "scr", "nhsNumbers": nums})
		if got := h.do("POST", "/v1/consents:check", string(b)); got.code != 400 || got.violation() != "nhs_numbers" {
			t.Fatalf("1001 numbers: %d %s", got.code, got.raw[:min(len(got.raw), 300)])
		}
		_, err := h.rpc.CheckConsents(context.Background(), &consentv1.CheckConsentsRequest{Kind: "scr", NhsNumbers: nums})
		if status.Code(err) != codes.InvalidArgument || grpcViolation(err) != "nhs_numbers" {
			t.Fatalf("gRPC 1001 numbers: %v", err)
		}
		b, _ = json.Marshal(map[string]any{"kind": "scr", "nhsNumbers": nums[:1000]})
		if got := h.do("POST", "/v1/consents:check", string(b)); got.code != 200 || len(got.list("results")) != 1000 {
			t.Fatalf("1000 numbers: %d", got.code)
		}
		for _, tc := range []struct{ body, field string }{
			{`{"kind":"scr","nhsNumbers":["9990000018","123"]}`, "nhs_numbers[1]"},
			{`{"kind":"scr","nhsNumbers":[]}`, "nhs_numbers"},
			{`{"kind":"ndop","nhsNumbers":["9990000018"]}`, "kind"},
			{`{"nhsNumbers":["9990000018"]}`, "kind"},
		} {
			if got := h.do("POST", "/v1/consents:check", tc.body); got.code != 400 || got.violation() != tc.field {
				t.Errorf("%s: %d %s, want 400 naming %s", tc.body, got.code, got.raw, tc.field)
			}
		}
	})
}

func TestRequestIDFromHeader(t *testing.T) {
	forEachBackend(t, func(t *testing.T, h *harness) {
		body := `{"kind":"scr","state":"dissent","channel":"phone"}`
		rec := h.do("POST", recordPath(patient), body, "X-Request-ID", "hdr-1")
		if rec.code != 200 || rec.object("decision")["requestId"] != "hdr-1" {
			t.Fatalf("header request id: %d %s", rec.code, rec.raw)
		}
		again := h.do("POST", recordPath(patient), body, "X-Request-ID", "hdr-1")
		if again.code != 200 || again.body["duplicate"] != true || again.object("decision")["id"] != rec.object("decision")["id"] {
			t.Fatalf("retry with the same header: %d %s", again.code, again.raw)
		}
		before, _, _ := h.fake.counts()
		conflict := h.do("POST", recordPath(patient), `{"kind":"scr","state":"dissent","channel":"phone","requestId":"body-1"}`, "X-Request-ID", "hdr-2")
		if conflict.code != 400 || conflict.violation() != "request_id" {
			t.Fatalf("body and header disagree: %d %s", conflict.code, conflict.raw)
		}
		if after, _, _ := h.fake.counts(); after != before {
			t.Fatal("a request with conflicting ids reached the cluster")
		}
		same := h.do("POST", recordPath(patient), `{"kind":"scr","state":"dissent","channel":"phone","requestId":"hdr-1"}`, "X-Request-ID", "hdr-1")
		if same.code != 200 || same.body["duplicate"] != true {
			t.Fatalf("body and header agree: %d %s", same.code, same.raw)
		}
		reuse := h.do("POST", recordPath(patient), `{"kind":"scr","state":"consent_core","channel":"phone"}`, "X-Request-ID", "hdr-1")
		if reuse.code != 409 {
			t.Fatalf("request id reused with other content: %d %s", reuse.code, reuse.raw)
		}
		// gRPC callers can pass the same key as metadata.
		ctx := metadata.AppendToOutgoingContext(context.Background(), "x-request-id", "md-1")
		g, err := h.rpc.RecordDecision(ctx, &consentv1.RecordDecisionRequest{NhsNumber: patient, Kind: "local_shared_record", State: "consent", Channel: "phone"})
		if err != nil || g.GetDecision().GetRequestId() != "md-1" {
			t.Fatalf("gRPC metadata request id: %v %v", g, err)
		}
		// Without either, the node generates one.
		gen := h.do("POST", recordPath(patient), `{"kind":"scr","state":"consent_core","channel":"phone"}`)
		if id, _ := gen.object("decision")["requestId"].(string); gen.code != 200 || len(id) != 36 {
			t.Fatalf("generated request id: %d %s", gen.code, gen.raw)
		}
	})
}

func TestVersionMismatchIs409(t *testing.T) {
	forEachBackend(t, func(t *testing.T, h *harness) {
		h.do("POST", recordPath(patient), goodBody)
		got := h.do("POST", recordPath(patient), `{"kind":"scr","state":"consent_core","channel":"phone","expectedVersion":"0"}`)
		if got.code != 409 || !strings.Contains(fmt.Sprint(got.body["message"]), "expected_version") {
			t.Fatalf("stale expectedVersion: %d %s", got.code, got.raw)
		}
		v := uint64(0)
		_, err := h.rpc.RecordDecision(context.Background(), &consentv1.RecordDecisionRequest{NhsNumber: patient, Kind: "scr",
			State: "consent_core", Channel: "phone", RequestId: "cas-g", ExpectedVersion: &v})
		if status.Code(err) != codes.Aborted {
			t.Fatalf("gRPC stale expected_version: %v", err)
		}
		ok := h.do("POST", recordPath(patient), `{"kind":"scr","state":"consent_core","channel":"phone","expectedVersion":"1"}`)
		if ok.code != 200 || ok.object("decision")["version"] != "2" {
			t.Fatalf("matching expectedVersion: %d %s", ok.code, ok.raw)
		}
	})
}

func TestMarkEnteredInError(t *testing.T) {
	forEachBackend(t, func(t *testing.T, h *harness) {
		rec := h.do("POST", recordPath(patient), goodBody)
		id := rec.object("decision")["id"].(string)
		got := h.do("POST", recordPath(patient)+"/"+id+":enteredInError", `{"reason":"wrong patient","requestId":"eie-1"}`)
		if got.code != 200 || got.object("decision")["enteredInError"] == nil || got.object("consent")["state"] != "implied_core" {
			t.Fatalf("entered in error: %d %s", got.code, got.raw)
		}
		if nf := h.do("POST", recordPath(patient)+"/nope:enteredInError", `{"requestId":"eie-2"}`); nf.code != 404 {
			t.Fatalf("unknown decision: %d %s", nf.code, nf.raw)
		}
	})
}

func TestClusterFailuresAreUnavailableNotFailures(t *testing.T) {
	h := newHarness(t, fakeBackend)
	for _, tc := range []struct {
		name     string
		err      error
		http     int
		grpc     codes.Code
		contains string
	}{
		{"leadership lost", fmt.Errorf("%w: leadership lost", raftnode.ErrOutcomeUnknown), 503, codes.Unavailable, "outcome unknown"},
		{"timeout after proposing", fmt.Errorf("%w: %w", raftnode.ErrOutcomeUnknown, context.DeadlineExceeded), 504, codes.DeadlineExceeded, "outcome unknown"},
		{"not leader", raftnode.ErrNotLeader, 503, codes.Unavailable, "leader"},
		{"no leader", cluster.ErrNoLeader, 503, codes.Unavailable, "leader"},
		{"not proposed in time", raftnode.ErrEnqueueTimeout, 503, codes.Unavailable, "not proposed"},
		{"shutting down", raftnode.ErrShutdown, 503, codes.Unavailable, "shutting down"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.fake.set(func(f *fakeCluster) { f.applyErr = tc.err })
			defer h.fake.set(func(f *fakeCluster) { f.applyErr = nil })
			got := h.do("POST", recordPath(patient), goodBody)
			if got.code != tc.http || !strings.Contains(fmt.Sprint(got.body["message"]), tc.contains) {
				t.Fatalf("REST: %d %s", got.code, got.raw)
			}
			if tc.contains == "outcome unknown" && !strings.Contains(fmt.Sprint(got.body["message"]), "same request_id is safe") {
				t.Fatalf("unknown outcome must say a retry with the same request_id is safe: %s", got.raw)
			}
			_, err := h.rpc.RecordDecision(context.Background(), &consentv1.RecordDecisionRequest{
				NhsNumber: patient, Kind: "scr", State: "dissent", Channel: "phone", RequestId: "g-1"})
			if status.Code(err) != tc.grpc || !strings.Contains(status.Convert(err).Message(), tc.contains) {
				t.Fatalf("gRPC: %v, want %s", err, tc.grpc)
			}
		})
	}
}

func TestReadConsistency(t *testing.T) {
	h := newHarness(t, fakeBackend)
	h.fake.set(func(f *fakeCluster) { f.readErr = fmt.Errorf("%w: partitioned", cluster.ErrNoLeader) })
	if got := h.do("GET", "/v1/patients/"+patient+"/consents", ""); got.code != 503 {
		t.Fatalf("linearizable read without quorum: %d %s", got.code, got.raw)
	}
	_, readsBefore, _ := h.fake.counts()
	got := h.do("GET", "/v1/patients/"+patient+"/consents?consistency=stale", "")
	if got.code != 200 {
		t.Fatalf("stale read: %d %s", got.code, got.raw)
	}
	read := got.object("read")
	if read["consistency"] != "stale" || read["knownCommitIndex"] != "41" || read["sinceLeaderContactMs"] != "1500" || read["servedBy"] != "t1" {
		t.Fatalf("stale read not labelled: %v", read)
	}
	if _, readsAfter, _ := h.fake.counts(); readsAfter != readsBefore {
		t.Fatal("a stale read went through the read barrier")
	}
	g, err := h.rpc.CheckConsents(context.Background(), &consentv1.CheckConsentsRequest{Kind: "scr", NhsNumbers: []string{patient}, Consistency: "stale"})
	if err != nil || g.GetRead().GetConsistency() != "stale" {
		t.Fatalf("gRPC stale check: %v %v", g, err)
	}
	for _, path := range []string{
		"/v1/patients/" + patient + "/consents?consistency=bogus",
		"/v1/patients/" + patient + "/decisions?consistency=bogus",
	} {
		if got := h.do("GET", path, ""); got.code != 400 || got.violation() != "consistency" {
			t.Fatalf("%s: %d %s", path, got.code, got.raw)
		}
	}
	_, err = h.rpc.ListDecisions(context.Background(), &consentv1.ListDecisionsRequest{NhsNumber: patient, Consistency: "eventual"})
	if status.Code(err) != codes.InvalidArgument || grpcViolation(err) != "consistency" {
		t.Fatalf("gRPC bogus consistency: %v", err)
	}
}

// A read index can be a raft no-op the register never sees: the answer is
// still current, and its revision is the register's, not the read index.
func TestRevisionIsTheRegisters(t *testing.T) {
	h := newHarness(t, fakeBackend)
	h.do("POST", recordPath(patient), goodBody)
	h.fake.set(func(f *fakeCluster) { f.readAhead = 3 })
	if got := h.do("GET", "/v1/patients/"+patient+"/consents", ""); got.code != 200 || got.body["revision"] != "1" {
		t.Fatalf("read with the read index past the register: %d %s", got.code, got.raw)
	}
	g, err := h.rpc.CheckConsents(context.Background(), &consentv1.CheckConsentsRequest{Kind: "scr", NhsNumbers: []string{patient}})
	if err != nil || g.GetRevision() != 1 {
		t.Fatalf("gRPC check: %v %v", g, err)
	}
}

func TestListDecisionsPagingAndRestrictedReasons(t *testing.T) {
	forEachBackend(t, func(t *testing.T, h *harness) {
		var firstReason any
		for i, st := range []string{"dissent", "consent_core", "dissent"} {
			got := h.do("POST", recordPath(patient), fmt.Sprintf(`{"kind":"scr","state":%q,"channel":"phone","reason":"private %d","restricted":true,"requestId":"p-%d"}`, st, i, i))
			if got.code != 200 {
				t.Fatalf("record %d: %d %s", i, got.code, got.raw)
			}
			if i == 0 {
				firstReason = got.object("decision")["reason"]
			}
		}
		if firstReason != "private 0" {
			t.Fatalf("the writer sees its own restricted reason, got %v", firstReason)
		}
		page := h.do("GET", "/v1/patients/"+patient+"/decisions?pageSize=2", "")
		token, _ := page.body["nextPageToken"].(string)
		if page.code != 200 || len(page.list("decisions")) != 2 || token == "" {
			t.Fatalf("first page: %d %s", page.code, page.raw)
		}
		for _, d := range page.list("decisions") {
			if r := d.(map[string]any)["reason"]; r != "" {
				t.Fatalf("restricted reason visible in history: %v", r)
			}
		}
		rest := h.do("GET", "/v1/patients/"+patient+"/decisions?pageSize=2&pageToken="+token, "")
		if rest.code != 200 || len(rest.list("decisions")) != 1 || rest.body["nextPageToken"] != "" {
			t.Fatalf("second page: %d %s", rest.code, rest.raw)
		}
		if rev := rest.list("decisions")[0].(map[string]any)["revision"]; rev != "3" {
			t.Fatalf("second page starts at revision %v, want 3", rev)
		}
		for _, tc := range []struct{ query, field string }{
			{"pageToken=not-a-token!", "page_token"},
			{"pageToken=AAAA", "page_token"},
			{"pageSize=-1", "page_size"},
			{"kind=ndop", "kind"},
		} {
			if got := h.do("GET", "/v1/patients/"+patient+"/decisions?"+tc.query, ""); got.code != 400 || got.violation() != tc.field {
				t.Errorf("%s: %d %s, want 400 naming %s", tc.query, got.code, got.raw, tc.field)
			}
		}
	})
}

func TestPageSizeIsCapped(t *testing.T) {
	h := newHarness(t, fakeBackend, func(c *Config) { c.MaxPageSize = 2 })
	for i := range 3 {
		h.do("POST", recordPath(patient), fmt.Sprintf(`{"kind":"scr","state":"dissent","channel":"phone","requestId":"c-%d"}`, i))
	}
	got, err := h.rpc.ListDecisions(context.Background(), &consentv1.ListDecisionsRequest{NhsNumber: patient, PageSize: 1000})
	if err != nil || len(got.GetDecisions()) != 2 || got.GetNextPageToken() == "" {
		t.Fatalf("a page over the maximum is served at the maximum: %v %v", got, err)
	}
}

func TestReadyz(t *testing.T) {
	h := newHarness(t, fakeBackend)
	if got := h.do("GET", "/readyz", ""); got.code != 200 || got.body["status"] != "ready" {
		t.Fatalf("readyz with a quorum: %d %s", got.code, got.raw)
	}
	h.fake.set(func(f *fakeCluster) { f.readErr = cluster.ErrNoLeader })
	if got := h.do("GET", "/readyz", ""); got.code != 503 || !strings.Contains(fmt.Sprint(got.body["reason"]), "no leader") {
		t.Fatalf("readyz without a quorum: %d %s", got.code, got.raw)
	}
	if got := h.do("GET", "/livez", ""); got.code != 200 {
		t.Fatalf("livez must not depend on the cluster: %d", got.code)
	}
}

func TestOperationalEndpoints(t *testing.T) {
	h := newHarness(t, fakeBackend)
	doc := h.do("GET", "/v1/openapi.json", "")
	if doc.code != 200 || !json.Valid(doc.raw) || doc.body["swagger"] != "2.0" {
		t.Fatalf("openapi %d", doc.code)
	}
	if kinds := h.do("GET", "/v1/kinds", ""); kinds.code != 200 || len(kinds.list("kinds")) != len(fsm.Kinds()) {
		t.Fatalf("kinds %d %s", kinds.code, kinds.raw)
	}
	st := h.do("GET", "/v1/cluster/status", "")
	if st.code != 200 || st.body["insecure"] != true || st.body["stateDigest"] != "" || st.body["version"] != "test" || st.body["id"] != "t1" {
		t.Fatalf("status (the digest only when asked) %d %s", st.code, st.raw)
	}
	for _, q := range []string{"includeDigest=true", "include_digest=true"} {
		if st := h.do("GET", "/v1/cluster/status?"+q, ""); st.code != 200 || st.body["stateDigest"] != "fake-digest" || st.body["version"] != "test" {
			t.Fatalf("status?%s %d %s", q, st.code, st.raw)
		}
	}
	if st, err := h.ops.GetStatus(context.Background(), &consentv1.GetStatusRequest{IncludeDigest: true}); err != nil || st.GetStateDigest() != "fake-digest" {
		t.Fatalf("gRPC status with digest: %v %v", st, err)
	}
	if got := h.do("DELETE", "/v1/cluster/members/nope", ""); got.code != 404 {
		t.Fatalf("remove unknown member: %d", got.code)
	}
	if got := h.do("DELETE", "/v1/cluster/members/t2", ""); got.code != 200 {
		t.Fatalf("remove member: %d %s", got.code, got.raw)
	}
	for _, tc := range []struct{ body, field string }{
		{`{"raftAddr":"h:1","grpcAddr":"h:2"}`, "id"},
		{`{"id":"n4","raftAddr":"nohost","grpcAddr":"h:2"}`, "raft_addr"},
		{`{"id":"n4","raftAddr":"h:1"}`, "grpc_addr"},
		{`{"id":"n4","raftAddr":"h:1","grpcAddr":"h:2","httpAddr":":"}`, "http_addr"},
	} {
		if got := h.do("POST", "/v1/cluster/members", tc.body); got.code != 400 || got.violation() != tc.field {
			t.Errorf("add member %s: %d %s, want 400 naming %s", tc.body, got.code, got.raw, tc.field)
		}
	}
	if got := h.do("POST", "/v1/cluster/members", `{"id":"n4","raftAddr":"h:1","grpcAddr":"h:2"}`); got.code != 200 {
		t.Fatalf("add member: %d %s", got.code, got.raw)
	}
	if got := h.do("GET", "/v1/no/such/route", ""); got.code != 404 {
		t.Fatalf("unknown route: %d", got.code)
	}
	metrics := h.do("GET", "/metrics", "")
	if metrics.code != 200 || !strings.Contains(string(metrics.raw), "consentd_api_requests_total") {
		t.Fatalf("metrics %d:\n%s", metrics.code, metrics.raw)
	}
}

func counterValue(t *testing.T, reg *prometheus.Registry, method, code string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "consentd_api_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["method"] == method && labels["code"] == code {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// The gateway dials the gRPC server, so REST calls meet every interceptor.
func TestRESTCallsPassThroughTheInterceptors(t *testing.T) {
	logs := &logBuffer{}
	reg := prometheus.NewRegistry()
	h := newHarness(t, fakeBackend, func(c *Config) { c.Metrics, c.Logger = reg, logs.logger() })
	const method = "/consent.v1.ConsentService/RecordDecision"
	before := counterValue(t, reg, method, "OK")
	body := `{"kind":"scr","state":"dissent","channel":"phone","reason":"SECRET-REASON","requestId":"log-1"}`
	if got := h.do("POST", recordPath(patient), body); got.code != 200 {
		t.Fatalf("record: %d %s", got.code, got.raw)
	}
	if after := counterValue(t, reg, method, "OK"); after != before+1 {
		t.Fatalf("REST call counted %v times by the metrics interceptor", after-before)
	}
	if bad := h.do("GET", "/v1/patients/9990000017/consents", ""); bad.code != 400 {
		t.Fatalf("bad read: %d", bad.code)
	}
	if n := counterValue(t, reg, "/consent.v1.ConsentService/GetConsents", "InvalidArgument"); n != 1 {
		t.Fatalf("refused REST read counted %v times", n)
	}
	if _, _, deadlines := h.fake.counts(); deadlines != 1 {
		t.Fatalf("the default timeout did not reach the REST call's Apply (%d calls had a deadline)", deadlines)
	}
	out := logs.String()
	if !strings.Contains(out, "via=rest") || !strings.Contains(out, "nhs=999****018") || !strings.Contains(out, "request_id=log-1") {
		t.Fatalf("request log line missing or unmasked:\n%s", out)
	}
	if strings.Contains(out, patient) || strings.Contains(out, "SECRET-REASON") {
		t.Fatalf("the log holds an NHS number or a reason:\n%s", out)
	}
	if !strings.Contains(out, "without TLS") {
		t.Fatalf("insecure start not warned about:\n%s", out)
	}
}

func TestPanicBecomesInternal(t *testing.T) {
	logs := &logBuffer{}
	h := newHarness(t, fakeBackend, func(c *Config) { c.Logger = logs.logger() })
	h.reg.set(func(r *fakeRegister) { r.panics = true })
	_, err := h.ops.GetStatus(context.Background(), &consentv1.GetStatusRequest{IncludeDigest: true})
	if status.Code(err) != codes.Internal || strings.Contains(err.Error(), "fake register") {
		t.Fatalf("gRPC panic: %v", err)
	}
	if got := h.do("GET", "/v1/cluster/status?includeDigest=true", ""); got.code != 500 || strings.Contains(string(got.raw), "fake register") {
		t.Fatalf("REST panic: %d %s", got.code, got.raw)
	}
	if !strings.Contains(logs.String(), "panic in handler") {
		t.Fatal("panic not logged")
	}
	h.reg.set(func(r *fakeRegister) { r.panics = false })
	if _, err := h.ops.GetStatus(context.Background(), &consentv1.GetStatusRequest{IncludeDigest: true}); err != nil {
		t.Fatalf("server did not survive the panic: %v", err)
	}
}

func TestUnmappedRegisterErrorIsGenericInternal(t *testing.T) {
	logs := &logBuffer{}
	h := newHarness(t, fakeBackend, func(c *Config) { c.Logger = logs.logger() })
	h.reg.set(func(r *fakeRegister) { r.queryErr = errors.New("bolt: page 7 corrupt") })
	got := h.do("GET", "/v1/patients/"+patient+"/consents", "")
	if got.code != 500 || strings.Contains(string(got.raw), "corrupt") {
		t.Fatalf("internal detail leaked: %d %s", got.code, got.raw)
	}
	if !strings.Contains(logs.String(), "page 7 corrupt") {
		t.Fatal("internal detail not logged")
	}
}

func TestShutdownDrainsInFlightRequests(t *testing.T) {
	reg := newFakeRegister()
	gate, held := make(chan struct{}), make(chan struct{})
	cl := &fakeCluster{apply: reg.apply, applyGate: gate, applyHeldUp: held}
	srv, err := New(Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0"}, reg, cl)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, base: "http://" + srv.HTTPAddr()}
	replied := make(chan restReply, 1)
	go func() { replied <- h.do("POST", recordPath(patient), goodBody) }()
	<-held
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stopped <- srv.Shutdown(ctx)
	}()
	waitFor(t, "the HTTP listener to close", func() bool {
		c, err := net.Dial("tcp", srv.HTTPAddr())
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	close(gate)
	if got := <-replied; got.code != 200 {
		t.Fatalf("in-flight request cut off by shutdown: %d %s", got.code, got.raw)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

func TestConfig(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	d := DefaultConfig()
	if d.MaxBodyBytes != 1<<20 || d.MaxCheckBatch != 1000 || d.MaxPageSize != 100 || d.MaxClockSkew != fsm.MaxClockSkew ||
		d.DefaultTimeout != 10*time.Second || d.ReadyTimeout != time.Second || d.ReadHeaderTimeout <= 0 {
		t.Fatalf("defaults differ from the documented ones: %+v", d)
	}
	for name, tweak := range map[string]func(*Config){
		"bad address":          func(c *Config) { c.HTTPAddr = "8080" },
		"page size over 1000":  func(c *Config) { c.MaxPageSize = 1001 },
		"looser clock skew":    func(c *Config) { c.MaxClockSkew = fsm.MaxClockSkew + time.Second },
		"no read header limit": func(c *Config) { c.ReadHeaderTimeout = 0 },
		"tiny body limit":      func(c *Config) { c.MaxBodyBytes = 10 },
		"no registry":          func(c *Config) { c.Metrics = nil },
	} {
		c := DefaultConfig()
		tweak(&c)
		if c.Validate() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	ok := DefaultConfig()
	ok.GRPCAddr, ok.HTTPAddr = ":0", ":0"
	if err := ok.Validate(); err != nil {
		t.Fatalf(":0 refused: %v", err)
	}
	// Zero fields take defaults; a registry shared by two servers is an error, not a panic.
	reg := prometheus.NewRegistry()
	partial := Config{GRPCAddr: ":0", HTTPAddr: ":0", Metrics: reg}
	s, err := New(partial, newFakeRegister(), &fakeCluster{})
	if err != nil || s.cfg.MaxPageSize != 100 || s.cfg.Now == nil {
		t.Fatalf("New with zero fields: %v", err)
	}
	if _, err := New(partial, newFakeRegister(), &fakeCluster{}); err == nil {
		t.Fatal("a second server registered the same metrics")
	}
}

func TestNewIDIsUUIDv7(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_123)
	a, b := newID(now), newID(now.Add(time.Millisecond))
	if len(a) != 36 || a[14] != '7' || !strings.ContainsRune("89ab", rune(a[19])) {
		t.Fatalf("not a UUIDv7: %s", a)
	}
	if a == newID(now) {
		t.Fatal("two ids in the same millisecond are equal")
	}
	if a >= b {
		t.Fatalf("ids not time-ordered: %s then %s", a, b)
	}
	if !strings.HasPrefix(a, "01a3185c-507b") {
		t.Fatalf("timestamp prefix of %s wrong for %d ms", a, now.UnixMilli())
	}
}

func TestMaskNHS(t *testing.T) {
	for in, want := range map[string]string{patient: "999****018", "123": "(malformed)", "": "(malformed)"} {
		if got := maskNHS(in); got != want {
			t.Errorf("maskNHS(%q) = %q, want %q", in, got, want)
		}
	}
}

// A request decoded from protobuf with only unknown fields must be refused
// as a request, not crash the handler.
func TestEmptyProtoRequestIsInvalid(t *testing.T) {
	h := newHarness(t, fakeBackend)
	req := &consentv1.RecordDecisionRequest{}
	if err := proto.Unmarshal([]byte{0xf8, 0x07, 0x01}, req); err != nil {
		t.Fatal(err)
	}
	_, err := h.rpc.RecordDecision(context.Background(), req)
	if status.Code(err) != codes.InvalidArgument || grpcViolation(err) != "nhs_number" {
		t.Fatalf("empty request: %v", err)
	}
}

func TestBodyMustBeOneJSONObject(t *testing.T) {
	h := newHarness(t, fakeBackend)
	for _, body := range []string{
		`{"kind":"scr","state":"dissent","channel":"phone"} {"kind":"gp_secondary_use"}`,
		`{"kind":"scr","state":"dissent","channel":"phone"}garbage`,
		`null`,
		`[]`,
	} {
		if got := h.do("POST", recordPath(patient), body); got.code != 400 {
			t.Errorf("%s: %d %s", body, got.code, got.raw)
		}
	}
	if n, _, _ := h.fake.counts(); n != 0 {
		t.Fatalf("%d malformed bodies reached the cluster", n)
	}
	if got := h.do("POST", recordPath(patient), "  \n"); got.code != 400 || got.violation() != "kind" {
		t.Fatalf("empty body: %d %s", got.code, got.raw)
	}
}

// Bytes a client sends must not make the error unmarshalable (a 500).
func TestInvalidUTF8IsA400(t *testing.T) {
	h := newHarness(t, fakeBackend)
	for _, tc := range []struct{ body, header string }{
		{"\xfa", ""},
		{`{"kind":"scr","state":"dissent","channel":"phone","odsCode\xfa":"x"}`, ""},
		{`{"kind":"scr","state":"dissent","channel":"phone"}`, "r\xfa"},
	} {
		got := h.do("POST", recordPath(patient), tc.body, "X-Request-ID", tc.header)
		if got.code != 400 || (tc.header != "" && got.violation() != "request_id") {
			t.Errorf("%q (X-Request-ID %q): %d %s", tc.body, tc.header, got.code, got.raw)
		}
	}
	req, _ := http.NewRequest("POST", h.base+recordPath(patient), strings.NewReader(`{"kind":"scr","state":"dissent","channel":"phone"}`))
	req.Header.Add("X-Request-ID", "a")
	req.Header.Add("X-Request-ID", "b")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("two X-Request-ID headers: %d", resp.StatusCode)
	}
	if n, _, _ := h.fake.counts(); n != 0 {
		t.Fatalf("%d requests reached the cluster", n)
	}
}

package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/lmc-consent/consentd/fsm"
	consentv1 "github.com/lmc-consent/consentd/proto/consent/v1"
)

// appliedCommandValidates fails unless the last command the cluster was
// given is one the register's own validation accepts.
func appliedCommandValidates(t *testing.T, cl *fakeCluster) {
	t.Helper()
	env, err := fsm.DecodeCommand(cl.last())
	if err != nil {
		t.Fatalf("proposed an undecodable command: %v", err)
	}
	cmd := env.GetRecordDecision()
	if err := fsm.ValidateRecordDecision(cmd, time.UnixMicro(cmd.GetRecordedAtMicros())); err != nil {
		t.Fatalf("proposed a command that does not validate: %v", err)
	}
}

// fuzzServer is an API server over the fake register and cluster; started
// (and stopped at the end) when the target goes through HTTP.
func fuzzServer(f *testing.F, start bool) (*Server, *fakeCluster) {
	f.Helper()
	reg := newFakeRegister()
	cl := &fakeCluster{apply: reg.apply}
	srv, err := New(Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0"}, reg, cl)
	if err != nil {
		f.Fatal(err)
	}
	if start {
		if err := srv.Start(); err != nil {
			f.Fatal(err)
		}
		f.Cleanup(func() { srv.Shutdown(context.Background()) })
	}
	return srv, cl
}

// plausibleHeader is what net/http would let through as a header value.
func plausibleHeader(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// FuzzRecordDecisionJSON posts arbitrary bodies (and X-Request-ID values)
// through the real HTTP handler and gateway: never a 5xx, never a panic,
// and nothing reaches the cluster unless the request decodes and validates.
func FuzzRecordDecisionJSON(f *testing.F) {
	f.Add([]byte(goodBody), "")
	f.Add([]byte(`{"kind":"scr","state":"dissent","channel":"phone","effectiveFrom":"2026-01-01T00:00:00Z","expectedVersion":"1"}`), "h-1")
	f.Add([]byte(`{"kind":"scr","state":"dissent","channel":"phone","decisionMaker":{"type":"proxy","proxyRole":"court_deputy"}}`), "")
	f.Add([]byte(`{"kind":"scr","state":"dissent","channel":"phone","requestId":"a"}`), "b")
	f.Add([]byte(`{"effectiveFrom":"9999-12-31T23:59:59Z"}`), "")
	f.Add([]byte(`{"kind":"scr","kind":"gp_secondary_use"}`), "")
	f.Add([]byte(`[]`), "")
	f.Add([]byte(`null`), "")
	srv, cl := fuzzServer(f, true)
	handler := srv.http.Handler
	f.Fuzz(func(t *testing.T, body []byte, requestID string) {
		if !plausibleHeader(requestID) {
			return
		}
		before, _, _ := cl.counts()
		req := httptest.NewRequest("POST", recordPath(patient), strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/json")
		if requestID != "" {
			req.Header.Set("X-Request-ID", requestID)
		}
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%d for %q (X-Request-ID %q): %s", rec.Code, body, requestID, rec.Body.String())
		}
		after, _, _ := cl.counts()
		if after == before {
			return
		}
		if rec.Code != http.StatusOK && rec.Code != http.StatusConflict {
			t.Fatalf("%d for %q, yet it reached the cluster", rec.Code, body)
		}
		if protojson.Unmarshal(body, &consentv1.RecordDecisionRequest{}) != nil && len(strings.TrimSpace(string(body))) > 0 {
			t.Fatalf("undecodable body %q reached the cluster", body)
		}
		appliedCommandValidates(t, cl)
	})
}

// FuzzRecordDecisionProto hands arbitrary protobuf to the gRPC handler.
func FuzzRecordDecisionProto(f *testing.F) {
	good, _ := proto.Marshal(&consentv1.RecordDecisionRequest{NhsNumber: patient, Kind: "scr", State: "dissent", Channel: "phone", RequestId: "p"})
	f.Add(good)
	f.Add([]byte{0x0a, 0x00})
	f.Add([]byte{})
	srv, cl := fuzzServer(f, false)
	svc := &consentService{s: srv}
	f.Fuzz(func(t *testing.T, b []byte) {
		req := &consentv1.RecordDecisionRequest{}
		if proto.Unmarshal(b, req) != nil {
			return
		}
		before, _, _ := cl.counts()
		_, err := svc.RecordDecision(context.Background(), req)
		if c := status.Code(err); c != codes.OK && c != codes.InvalidArgument && c != codes.Aborted {
			t.Fatalf("%v for %v", err, req)
		}
		after, _, _ := cl.counts()
		if after == before {
			return
		}
		if status.Code(err) == codes.InvalidArgument {
			t.Fatalf("refused request %v reached the cluster", req)
		}
		appliedCommandValidates(t, cl)
	})
}

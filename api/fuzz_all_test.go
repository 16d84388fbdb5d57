package api

import (
	"context"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	consentv1 "github.com/lmc-consent/consentd/proto/consent/v1"
)

// restRoutes are every REST route of the public API; {p} is replaced by a
// fuzzed path segment.
var restRoutes = []struct{ method, path string }{
	{"POST", "/v1/patients/{p}/decisions"},
	{"POST", "/v1/patients/9990000018/decisions/{p}:enteredInError"},
	{"GET", "/v1/patients/{p}/consents"},
	{"GET", "/v1/patients/{p}/decisions"},
	{"POST", "/v1/consents:check"},
	{"GET", "/v1/kinds"},
	{"GET", "/v1/cluster/status"},
	{"POST", "/v1/cluster/members"},
	{"DELETE", "/v1/cluster/members/{p}"},
	{"GET", "/v1/audit/access"},
	{"POST", "/v1/decisions:batchRecord"},
}

// FuzzEveryRESTRoute sends arbitrary path segments, query strings and
// bodies to every route through the real handler and gateway: bad input is
// a 4xx naming what is wrong, never a 5xx or a panic.
func FuzzEveryRESTRoute(f *testing.F) {
	f.Add(uint8(0), "9990000018", "", []byte(goodBody))
	f.Add(uint8(1), "0199-x", "", []byte(`{"reason":"wrong patient","requestId":"e"}`))
	f.Add(uint8(2), "9990000018", "consistency=stale", []byte{})
	f.Add(uint8(3), "9990000018", "kind=scr&pageSize=2&pageToken=AAAAAAAAAAE", []byte{})
	f.Add(uint8(4), "", "", []byte(`{"kind":"scr","nhsNumbers":["9990000018","9000000009"]}`))
	f.Add(uint8(7), "", "", []byte(`{"id":"n4","raftAddr":"10.0.0.4:7081","grpcAddr":"10.0.0.4:9081","httpAddr":"10.0.0.4:8081"}`))
	f.Add(uint8(8), "n4", "", []byte{})
	f.Add(uint8(9), "", "nhsNumber=9990000018&since=2026-01-01T00:00:00Z&pageSize=-1", []byte{})
	f.Add(uint8(10), "", "", []byte(`{"decisions":[{"nhsNumber":"9990000018","kind":"scr","state":"dissent","channel":"import","requestId":"b-1"},`+
		`{"nhsNumber":"9000000009","kind":"scr","state":"dissent","channel":"import","requestId":"b-2","expectedVersion":"0"}]}`))
	f.Add(uint8(6), "", "includeDigest=true", []byte{})
	srv, _ := fuzzServer(f, true)
	handler := srv.http.Handler
	f.Fuzz(func(t *testing.T, route uint8, segment, query string, body []byte) {
		r := restRoutes[int(route)%len(restRoutes)]
		target := strings.Replace(r.path, "{p}", url.PathEscape(segment), 1)
		if query != "" {
			target += "?" + url.PathEscape(query)
		}
		req := httptest.NewRequest(r.method, "http://node"+target, strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		if rec.Code >= 500 && rec.Code != 503 {
			t.Fatalf("%s %s %q: %d %s", r.method, target, body, rec.Code, rec.Body.String())
		}
	})
}

// FuzzEveryGRPCRequest decodes arbitrary protobuf as each public request
// type and calls its handler, as a gRPC client would: no panic, and no
// Internal or Unknown answer for anything a client can send.
func FuzzEveryGRPCRequest(f *testing.F) {
	for _, m := range []proto.Message{
		&consentv1.RecordDecisionRequest{NhsNumber: patient, Kind: "scr", State: "dissent", Channel: "phone"},
		&consentv1.GetConsentsRequest{NhsNumber: patient, Consistency: "stale"},
		&consentv1.CheckConsentsRequest{Kind: "scr", NhsNumbers: []string{patient}},
		&consentv1.ListAccessRequest{NhsNumber: patient, PageSize: 3},
		&consentv1.RecordDecisionsRequest{Decisions: []*consentv1.RecordDecisionRequest{
			{NhsNumber: patient, Kind: "scr", State: "dissent", Channel: "phone", RequestId: "b-1"},
			{NhsNumber: "9000000009", Kind: "scr", State: "dissent", Channel: "phone", RequestId: "b-2"}}},
		&consentv1.GetStatusRequest{IncludeDigest: true},
	} {
		b, _ := proto.Marshal(m)
		for i := uint8(0); i < 11; i++ {
			f.Add(i, b)
		}
	}
	srv, _ := fuzzServer(f, false)
	cs, cls, as := &consentService{s: srv}, &clusterService{s: srv}, &auditService{s: srv}
	calls := []func(context.Context, []byte) (bool, error){
		call(cs.RecordDecision), call(cs.MarkEnteredInError), call(cs.GetConsents), call(cs.ListDecisions),
		call(cs.CheckConsents), call(cs.ListKinds), call(cls.GetStatus), call(cls.AddMember), call(cls.RemoveMember),
		call(as.ListAccess), call(cs.RecordDecisions),
	}
	f.Fuzz(func(t *testing.T, which uint8, b []byte) {
		// A bound, so that a handler that hangs fails here instead of
		// stalling the fuzzer (and CI) forever.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		decoded, err := calls[int(which)%len(calls)](ctx, b)
		if !decoded {
			return
		}
		switch status.Code(err) {
		case codes.Internal, codes.Unknown, codes.DeadlineExceeded:
			t.Fatalf("call %d with %x: %v", which, b, err)
		}
	})
}

// call adapts a handler to raw protobuf input; false when b does not decode
// (gRPC itself would refuse it before the handler).
func call[Req any, PReq interface {
	*Req
	proto.Message
}, Resp any](h func(context.Context, PReq) (Resp, error)) func(context.Context, []byte) (bool, error) {
	return func(ctx context.Context, b []byte) (bool, error) {
		req := PReq(new(Req))
		if proto.Unmarshal(b, req) != nil {
			return false, nil
		}
		_, err := h(ctx, req)
		return true, err
	}
}

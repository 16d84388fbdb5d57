package api

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/lmc-consent/consentd/fsm"
	consentv1 "github.com/lmc-consent/consentd/proto/consent/v1"
)

func newTestLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// FuzzRecordDecisionJSON posts arbitrary bodies through the real gateway:
// never a 5xx, and nothing reaches the cluster unless the request is valid.
func FuzzRecordDecisionJSON(f *testing.F) {
	f.Add([]byte(goodBody))
	f.Add([]byte(`{"kind":"scr","state":"dissent","channel":"phone","effectiveFrom":"2026-01-01T00:00:00Z","expectedVersion":"1"}`))
	f.Add([]byte(`{"decisionMaker":{"type":"proxy","proxyRole":"court_deputy"}}`))
	f.Add([]byte(`[]`))
	store, err := fsm.Open(fsm.Config{Path: filepath.Join(f.TempDir(), "r.db")})
	if err != nil {
		f.Fatal(err)
	}
	defer store.Close()
	fake := &fakeCluster{store: store}
	srv, err := New(Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0"}, store, fake)
	if err != nil {
		f.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		f.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	handler := srv.http.Handler
	f.Fuzz(func(t *testing.T, body []byte) {
		before := fake.applyCount()
		req := httptest.NewRequest("POST", "/v1/patients/9990000018/decisions", strings.NewReader(string(body)))
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%d for %q: %s", rec.Code, body, rec.Body.String())
		}
		if rec.Code == http.StatusBadRequest && fake.applyCount() != before {
			t.Fatalf("refused request %q still reached the cluster", body)
		}
	})
}

// FuzzRecordDecisionProto hands arbitrary protobuf to the gRPC handler.
func FuzzRecordDecisionProto(f *testing.F) {
	good, _ := proto.Marshal(&consentv1.RecordDecisionRequest{NhsNumber: patient, Kind: "scr", State: "dissent", Channel: "phone", RequestId: "p"})
	f.Add(good)
	f.Add([]byte{0x0a, 0x00})
	store, err := fsm.Open(fsm.Config{Path: filepath.Join(f.TempDir(), "r.db")})
	if err != nil {
		f.Fatal(err)
	}
	defer store.Close()
	fake := &fakeCluster{store: store}
	srv, err := New(Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0"}, store, fake)
	if err != nil {
		f.Fatal(err)
	}
	svc := &consentService{s: srv}
	f.Fuzz(func(t *testing.T, b []byte) {
		req := &consentv1.RecordDecisionRequest{}
		if proto.Unmarshal(b, req) != nil {
			return
		}
		before := fake.applyCount()
		_, err := svc.RecordDecision(context.Background(), req)
		if c := status.Code(err); c == codes.Internal || c == codes.Unknown {
			t.Fatalf("%v for %v", err, req)
		}
		if err != nil && fake.applyCount() != before && status.Code(err) == codes.InvalidArgument {
			t.Fatalf("invalid request reached the cluster: %v", req)
		}
	})
}

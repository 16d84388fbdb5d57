package jepsen

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	consentv1 "github.com/lmc-consent/consentd/proto/consent/v1"
)

// nodeAPI is what the workload asks of one node, over gRPC or REST.
type nodeAPI interface {
	Record(ctx context.Context, req *consentv1.RecordDecisionRequest) (*consentv1.RecordDecisionResponse, error)
	Consents(ctx context.Context, nhs, consistency string) (*consentv1.GetConsentsResponse, error)
	Decisions(ctx context.Context, nhs, kind, pageToken string, pageSize int32) (*consentv1.ListDecisionsResponse, error)
	Status(ctx context.Context) (*consentv1.GetStatusResponse, error)
	Kinds(ctx context.Context) (*consentv1.ListKindsResponse, error)
	Close() error
}

// callError is a failed call, in the terms that decide its outcome.
type callError struct {
	// Code is the gRPC code from the server, or from the REST error body.
	Code codes.Code
	// HTTP is the REST status; 0 for gRPC.
	HTTP int
	Msg  string
	// Transport: no answer from the server (refused, reset, timed out).
	Transport bool
}

func (e *callError) Error() string {
	if e.HTTP != 0 {
		return fmt.Sprintf("http %d %s: %s", e.HTTP, e.Code, e.Msg)
	}
	if e.Transport {
		return "transport: " + e.Msg
	}
	return fmt.Sprintf("grpc %s: %s", e.Code, e.Msg)
}

// definitePhrases are the server's words for "nothing was proposed"
// (raftnode and cluster sentinels); an UNAVAILABLE saying one of these, and
// not "outcome unknown", is a definite failure by the API's contract.
var definitePhrases = []string{"not proposed", "not the leader", "no leader", "shutting down"}

// classifyWrite decides the history type of a failed write: fail when the
// server said it definitely did not happen, info otherwise. mismatch marks
// the 409 of a compare-and-set.
func classifyWrite(err error) (typ string, mismatch bool) {
	var ce *callError
	if !errors.As(err, &ce) {
		return TypeInfo, false
	}
	msg := strings.ToLower(ce.Msg)
	if neverSent(msg) {
		return TypeFail, false
	}
	if ce.Transport {
		return TypeInfo, false
	}
	switch ce.Code {
	case codes.Aborted:
		return TypeFail, strings.Contains(msg, "expected version")
	case codes.InvalidArgument, codes.NotFound, codes.PermissionDenied, codes.Unauthenticated,
		codes.FailedPrecondition, codes.AlreadyExists, codes.OutOfRange, codes.ResourceExhausted:
		return TypeFail, false
	case codes.Unavailable:
		if strings.Contains(msg, "outcome unknown") {
			return TypeInfo, false
		}
		for _, p := range definitePhrases {
			if strings.Contains(msg, p) {
				return TypeFail, false
			}
		}
		return TypeInfo, false
	case codes.Unknown:
		// A REST error without a gRPC code: trust the HTTP class.
		if ce.HTTP >= 400 && ce.HTTP < 500 && ce.HTTP != http.StatusRequestTimeout {
			return TypeFail, false
		}
	}
	return TypeInfo, false
}

// neverSent recognises a connection that could not be opened, so the
// request never left the client: gRPC's "Error while dialing" (an RPC on a
// channel that cannot connect fails before it is sent) and net/http's dial
// errors. A connection that breaks later is not this.
func neverSent(msg string) bool {
	return strings.Contains(msg, "error while dialing") || strings.Contains(msg, "dial tcp") && strings.Contains(msg, "connect: connection refused")
}

// grpcAPI talks to one node over gRPC.
type grpcAPI struct {
	conn    *grpc.ClientConn
	consent consentv1.ConsentServiceClient
	cluster consentv1.ClusterServiceClient
}

// newGRPCAPI dials addr with mutual TLS when conf is set, plain TCP
// otherwise.
func newGRPCAPI(addr string, dial func(context.Context, string, string) (net.Conn, error), conf *tls.Config) (*grpcAPI, error) {
	creds := insecure.NewCredentials()
	if conf != nil {
		creds = credentials.NewTLS(conf)
	}
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(creds),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return dial(ctx, "tcp", a) }))
	if err != nil {
		return nil, err
	}
	return &grpcAPI{conn: conn, consent: consentv1.NewConsentServiceClient(conn), cluster: consentv1.NewClusterServiceClient(conn)}, nil
}

func grpcErr(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return &callError{Transport: true, Msg: err.Error()}
	}
	msg := st.Message()
	// Errors the client library made up rather than the server's answer.
	transport := st.Code() == codes.DeadlineExceeded && !strings.Contains(msg, "outcome unknown") ||
		st.Code() == codes.Canceled ||
		st.Code() == codes.Unavailable && (strings.Contains(msg, "connection") || strings.Contains(msg, "transport"))
	return &callError{Code: st.Code(), Msg: msg, Transport: transport}
}

func (g *grpcAPI) Record(ctx context.Context, req *consentv1.RecordDecisionRequest) (*consentv1.RecordDecisionResponse, error) {
	r, err := g.consent.RecordDecision(ctx, req)
	return r, grpcErr(err)
}

func (g *grpcAPI) Consents(ctx context.Context, nhs, consistency string) (*consentv1.GetConsentsResponse, error) {
	r, err := g.consent.GetConsents(ctx, &consentv1.GetConsentsRequest{NhsNumber: nhs, Consistency: consistency})
	return r, grpcErr(err)
}

func (g *grpcAPI) Decisions(ctx context.Context, nhs, kind, pageToken string, pageSize int32) (*consentv1.ListDecisionsResponse, error) {
	r, err := g.consent.ListDecisions(ctx, &consentv1.ListDecisionsRequest{NhsNumber: nhs, Kind: kind, PageToken: pageToken, PageSize: pageSize})
	return r, grpcErr(err)
}

func (g *grpcAPI) Status(ctx context.Context) (*consentv1.GetStatusResponse, error) {
	r, err := g.cluster.GetStatus(ctx, &consentv1.GetStatusRequest{IncludeDigest: true})
	return r, grpcErr(err)
}

func (g *grpcAPI) Kinds(ctx context.Context) (*consentv1.ListKindsResponse, error) {
	r, err := g.consent.ListKinds(ctx, &consentv1.ListKindsRequest{})
	return r, grpcErr(err)
}

func (g *grpcAPI) Close() error { return g.conn.Close() }

// restAPI talks to one node over REST/JSON through the gateway.
type restAPI struct {
	base string
	hc   *http.Client
}

// newRESTAPI talks https with conf as the client's TLS configuration when
// conf is set, http otherwise.
func newRESTAPI(addr string, dial func(context.Context, string, string) (net.Conn, error), conf *tls.Config) *restAPI {
	tr := &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 4, IdleConnTimeout: 30 * time.Second}
	if conf == nil {
		return &restAPI{base: "http://" + addr, hc: &http.Client{Transport: tr}}
	}
	tr.TLSClientConfig = conf
	return &restAPI{base: "https://" + addr, hc: &http.Client{Transport: tr}}
}

var unmarshal = protojson.UnmarshalOptions{DiscardUnknown: true}

func (r *restAPI) do(ctx context.Context, method, path string, body proto.Message, out proto.Message) error {
	var rd io.Reader
	if body != nil {
		b, err := protojson.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, r.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if dl, ok := ctx.Deadline(); ok {
		// grpc-gateway turns this into the handler's deadline, so the node
		// answers (504) before the client gives up.
		if ms := time.Until(dl).Milliseconds() - 200; ms > 0 {
			req.Header.Set("Grpc-Timeout", strconv.FormatInt(ms, 10)+"m")
		}
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		return &callError{Transport: true, Msg: err.Error()}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return &callError{Transport: true, Msg: err.Error()}
	}
	if resp.StatusCode/100 != 2 {
		ce := &callError{HTTP: resp.StatusCode, Code: codes.Unknown, Msg: string(raw)}
		var eb struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		}
		if json.Unmarshal(raw, &eb) == nil && eb.Code != 0 {
			ce.Code, ce.Msg = codes.Code(eb.Code), eb.Message
		}
		return ce
	}
	if err := unmarshal.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("decode %s %s: %w", method, path, err)
	}
	return nil
}

func (r *restAPI) Record(ctx context.Context, req *consentv1.RecordDecisionRequest) (*consentv1.RecordDecisionResponse, error) {
	body := proto.Clone(req).(*consentv1.RecordDecisionRequest)
	body.NhsNumber = ""
	out := &consentv1.RecordDecisionResponse{}
	return out, r.do(ctx, http.MethodPost, "/v1/patients/"+url.PathEscape(req.GetNhsNumber())+"/decisions", body, out)
}

func (r *restAPI) Consents(ctx context.Context, nhs, consistency string) (*consentv1.GetConsentsResponse, error) {
	path := "/v1/patients/" + url.PathEscape(nhs) + "/consents"
	if consistency != "" {
		path += "?consistency=" + url.QueryEscape(consistency)
	}
	out := &consentv1.GetConsentsResponse{}
	return out, r.do(ctx, http.MethodGet, path, nil, out)
}

func (r *restAPI) Decisions(ctx context.Context, nhs, kind, pageToken string, pageSize int32) (*consentv1.ListDecisionsResponse, error) {
	q := url.Values{}
	if kind != "" {
		q.Set("kind", kind)
	}
	if pageToken != "" {
		q.Set("pageToken", pageToken)
	}
	q.Set("pageSize", strconv.Itoa(int(pageSize)))
	out := &consentv1.ListDecisionsResponse{}
	return out, r.do(ctx, http.MethodGet, "/v1/patients/"+url.PathEscape(nhs)+"/decisions?"+q.Encode(), nil, out)
}

func (r *restAPI) Status(ctx context.Context) (*consentv1.GetStatusResponse, error) {
	out := &consentv1.GetStatusResponse{}
	return out, r.do(ctx, http.MethodGet, "/v1/cluster/status?includeDigest=true", nil, out)
}

func (r *restAPI) Kinds(ctx context.Context) (*consentv1.ListKindsResponse, error) {
	out := &consentv1.ListKindsResponse{}
	return out, r.do(ctx, http.MethodGet, "/v1/kinds", nil, out)
}

// Ready asks /readyz, which is 200 only when a linearizable read can be
// served.
func (r *restAPI) Ready(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.base+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("readyz %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	return nil
}

func (r *restAPI) Close() error {
	r.hc.CloseIdleConnections()
	return nil
}

// allDecisions reads every page of a history; each page is its own
// linearizable read, so only a one-page answer is a point-in-time view.
func allDecisions(ctx context.Context, api nodeAPI, nhs, kind string) ([]*consentv1.Decision, int, error) {
	var out []*consentv1.Decision
	token := ""
	pages := 0
	for {
		resp, err := api.Decisions(ctx, nhs, kind, token, 1000)
		if err != nil {
			return nil, pages, err
		}
		pages++
		out = append(out, resp.GetDecisions()...)
		if token = resp.GetNextPageToken(); token == "" {
			return out, pages, nil
		}
	}
}

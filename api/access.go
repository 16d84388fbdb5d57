package api

import (
	"context"
	"errors"
	"net"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lmc-consent/consentd/audit"
	"github.com/lmc-consent/consentd/pki"
	consentv1 "github.com/lmc-consent/consentd/proto/consent/v1"
)

// operations says which calls touch patients' consent (and so go to the
// access log) and how the log names them. Calls not listed (kinds, status)
// reveal nothing about a patient and are not logged.
var operations = map[string]audit.Operation{
	"/consent.v1.ConsentService/RecordDecision":     audit.OpWrite,
	"/consent.v1.ConsentService/RecordDecisions":    audit.OpWrite,
	"/consent.v1.ConsentService/MarkEnteredInError": audit.OpWrite,
	"/consent.v1.ConsentService/GetConsents":        audit.OpRead,
	"/consent.v1.ConsentService/ListDecisions":      audit.OpHistory,
	"/consent.v1.ConsentService/CheckConsents":      audit.OpCheck,
	"/consent.v1.ClusterService/AddMember":          audit.OpAdmin,
	"/consent.v1.ClusterService/RemoveMember":       audit.OpAdmin,
	"/consent.v1.AuditService/ListAccess":           audit.OpAudit,
}

// overlapsAccessLog are the reads whose handlers touch the register only
// after Server.read returns. For them an allowed call's access-log append
// (an fsync) runs while the read barrier makes its round trip to the other
// nodes, and read waits for both: the entry is still on disk before
// anything is read, and a log that cannot be written still refuses the
// read, but a linearizable read no longer pays the fsync and the round trip
// one after the other.
var overlapsAccessLog = map[string]bool{
	"/consent.v1.ConsentService/GetConsents":   true,
	"/consent.v1.ConsentService/ListDecisions": true,
	"/consent.v1.ConsentService/CheckConsents": true,
}

// pendingAccess is an access-log append started before its call ran.
type pendingAccess struct {
	done chan struct{}
	err  error
}

type pendingAccessKey struct{}

// startAccess begins logging an allowed call in the background; the
// returned context carries it for Server.read to wait on.
func (s *Server) startAccess(ctx context.Context, id pki.Identity, method string, req any) (context.Context, *pendingAccess) {
	p := &pendingAccess{done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.err = s.logAccess(ctx, id, method, req, nil)
	}()
	return context.WithValue(ctx, pendingAccessKey{}, p), p
}

// wait returns the append's outcome once it is known. Append gives up when
// the call's context ends, so this never outlives the call for long.
func (p *pendingAccess) wait() error {
	<-p.done
	return p.err
}

// awaitAccess waits for the call's background access-log append, if it has
// one; the register must not be read before it returns nil.
func awaitAccess(ctx context.Context) error {
	if p, ok := ctx.Value(pendingAccessKey{}).(*pendingAccess); ok {
		return p.wait()
	}
	return nil
}

// runLogged runs an allowed call with its access-log entry: in the
// background for the reads in overlapsAccessLog, first for the rest. Either
// way a log that could not be written makes the call fail with the log's
// error, whatever the handler did.
func (s *Server) runLogged(ctx context.Context, id pki.Identity, method string, req any, handler func(context.Context, any) (any, error)) (any, error) {
	if s.cfg.AccessLog == nil || !overlapsAccessLog[method] {
		if err := s.logAccess(ctx, id, method, req, nil); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
	hctx, p := s.startAccess(ctx, id, method, req)
	resp, err := handler(hctx, req)
	if lerr := p.wait(); lerr != nil {
		return nil, lerr
	}
	return resp, err
}

// logAccess appends the authorisation decision for a call to the access
// log before the call runs, so that a log that cannot be written stops the
// access (fail closed) rather than letting it through unrecorded. A denied
// call is logged with the error it gets.
func (s *Server) logAccess(ctx context.Context, id pki.Identity, method string, req any, denied error) error {
	op, logged := operations[method]
	if s.cfg.AccessLog == nil || !logged {
		return nil
	}
	e := audit.Entry{Method: method[1:], Operation: op, Outcome: audit.OutcomeAllowed, Code: codes.OK.String(), Transport: via(ctx)}
	if denied != nil {
		e.Outcome, e.Code = audit.OutcomeDenied, status.Code(denied).String()
	}
	switch {
	case id.IsNode():
		e.Caller = audit.Caller{Subject: "node:" + id.NodeID}
	case id.Role != "":
		e.Caller = audit.Caller{Subject: id.Subject, Org: id.Org, Role: string(id.Role)}
	case s.cfg.TLS == nil:
		e.Caller = audit.Caller{Subject: "anonymous"}
	}
	if r, ok := req.(interface{ GetNhsNumber() string }); ok && r.GetNhsNumber() != "" {
		e.NHSNumbers = []string{r.GetNhsNumber()}
	}
	if r, ok := req.(interface{ GetNhsNumbers() []string }); ok {
		e.NHSNumbers = r.GetNhsNumbers()
	}
	if r, ok := req.(*consentv1.RecordDecisionsRequest); ok {
		// One entry for the whole batch: it is one write, allowed or not as one.
		e.NHSNumbers = make([]string, len(r.GetDecisions()))
		for i, d := range r.GetDecisions() {
			e.NHSNumbers[i] = d.GetNhsNumber()
		}
	}
	if r, ok := req.(interface{ GetKind() string }); ok {
		e.Kind = r.GetKind()
	}
	e.RequestID = headerRequestID(ctx)
	if r, ok := req.(interface{ GetRequestId() string }); ok && e.RequestID == "" {
		e.RequestID = r.GetRequestId()
	}
	e.Remote = remoteAddr(ctx)
	if err := s.cfg.AccessLog.Append(ctx, e); err != nil {
		return s.accessNotLogged(ctx, method, err)
	}
	return nil
}

// accessNotLogged refuses a call whose access entry was not confirmed
// durable, and says why at the level an operator needs. A caller that hung
// up while its entry waited for the sync is not a failing log: every load
// tool cancels its calls in flight when it stops, and an ERROR for each
// would hide the one that matters. A caller whose deadline ran out there
// is worth a warning, since the sync took longer than the caller allowed.
func (s *Server) accessNotLogged(ctx context.Context, method string, err error) error {
	ctxErr := errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
	switch {
	case ctxErr && errors.Is(ctx.Err(), context.Canceled):
		s.log.Debug("caller left before its access entry was durable; refusing the request", "method", method, "err", err)
	case ctxErr && ctx.Err() != nil:
		s.log.Warn("caller's deadline passed before its access entry was durable; refusing the request", "method", method, "err", err)
	default:
		s.log.Error("access log not written; refusing the request", "method", method, "err", err)
	}
	if ctxErr {
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Unavailable, "the access log cannot be written; nothing was read or changed")
}

// remoteAddr is the caller's address: the TCP peer for gRPC, the address
// the gateway saw for REST.
func remoteAddr(ctx context.Context) string {
	if via(ctx) == "rest" {
		// The gateway appends the address it saw to any X-Forwarded-For the
		// client sent; only that last element is not the client's say-so.
		if v := metadata.ValueFromIncomingContext(ctx, "x-forwarded-for"); len(v) > 0 {
			parts := strings.Split(v[len(v)-1], ",")
			return strings.TrimSpace(parts[len(parts)-1])
		}
		return ""
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		if _, ok := p.Addr.(*net.TCPAddr); ok {
			return p.Addr.String()
		}
	}
	return ""
}

type auditService struct {
	consentv1.UnimplementedAuditServiceServer
	s *Server
}

func (a *auditService) ListAccess(ctx context.Context, req *consentv1.ListAccessRequest) (*consentv1.ListAccessResponse, error) {
	if a.s.cfg.AccessLog == nil {
		return nil, status.Error(codes.FailedPrecondition, "this node keeps no access log")
	}
	f := audit.Filter{NHSNumber: req.GetNhsNumber(), Org: req.GetOrg(), Subject: req.GetSubject(),
		Limit: int(req.GetPageSize()), PageToken: req.GetPageToken()}
	if req.GetPageSize() < 0 {
		return nil, invalidField("page_size", "must not be negative")
	}
	if req.Since != nil {
		f.Since = req.GetSince().AsTime()
	}
	if req.Until != nil {
		f.Until = req.GetUntil().AsTime()
	}
	entries, next, err := a.s.cfg.AccessLog.Query(ctx, f)
	if errors.Is(err, audit.ErrInvalidFilter) {
		return nil, invalidField("page_token", err.Error())
	}
	if err != nil {
		a.s.log.Error("access log query", "err", err)
		return nil, status.Error(codes.Unavailable, "the access log cannot be read")
	}
	out := &consentv1.ListAccessResponse{NextPageToken: next, Node: a.s.cl.NodeID()}
	for _, e := range entries {
		out.Entries = append(out.Entries, &consentv1.AccessEntry{
			Seq: e.Seq, Time: timestamppb.New(e.Time), Node: e.Node,
			Caller: &consentv1.AccessCaller{Subject: e.Caller.Subject, Org: e.Caller.Org, Role: e.Caller.Role},
			Method: e.Method, Operation: string(e.Operation), NhsNumbers: e.NHSNumbers, Kind: e.Kind,
			Outcome: string(e.Outcome), Code: e.Code, RequestId: e.RequestID, Remote: e.Remote, Transport: e.Transport,
		})
	}
	return out, nil
}

func invalidField(field, msg string) error {
	return withViolation(status.New(codes.InvalidArgument, field+": "+msg), field, msg).Err()
}

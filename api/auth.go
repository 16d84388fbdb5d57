package api

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/lmc-consent/consentd/pki"
	clusterv1 "github.com/lmc-consent/consentd/proto/cluster/v1"
	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
)

// identityKey is the metadata key under which the REST gateway passes the
// identity it verified from the client's certificate to the gRPC server.
// Only calls over the in-process listener may carry it, and the gateway
// drops any header a REST client sends that would map to a reserved key,
// so it cannot be forged from outside.
const identityKey = "x-consentd-identity"

// reservedPrefix marks metadata only the node itself may set.
const reservedPrefix = "x-consentd-"

type callerKey struct{}

// callerFrom is who is calling, once authorise has run: the zero Identity
// when TLS is off and every caller is anonymous (development only; status
// says insecure).
func callerFrom(ctx context.Context) pki.Identity {
	id, _ := ctx.Value(callerKey{}).(pki.Identity)
	return id
}

// Who may call what. A node certificate is not a caller's: nodes reach only
// the node-to-node service, callers never reach it.
var (
	allReaders  = []pki.Role{pki.RolePractice, pki.RoleReader, pki.RoleLMCAdmin, pki.RoleAuditor}
	methodRoles = map[string][]pki.Role{
		"/consent.v1.ConsentService/RecordDecision":     {pki.RolePractice},
		"/consent.v1.ConsentService/RecordDecisions":    {pki.RolePractice},
		"/consent.v1.ConsentService/MarkEnteredInError": {pki.RoleLMCAdmin},
		"/consent.v1.ConsentService/GetConsents":        allReaders,
		"/consent.v1.ConsentService/ListDecisions":      allReaders,
		"/consent.v1.ConsentService/CheckConsents":      allReaders,
		"/consent.v1.ConsentService/ListKinds":          allReaders,
		"/consent.v1.ClusterService/GetStatus":          allReaders,
		"/consent.v1.ClusterService/AddMember":          {pki.RoleLMCAdmin},
		"/consent.v1.ClusterService/RemoveMember":       {pki.RoleLMCAdmin},
		"/consent.v1.AuditService/ListAccess":           {pki.RoleAuditor},
	}
)

const peerServicePrefix = "/consentd.cluster.v1.PeerService/"

// identify finds the verified identity of a call: the TLS peer on the
// network listener, or what the gateway vouches for on the in-process one.
func (s *Server) identify(ctx context.Context) (pki.Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return pki.Identity{}, status.Error(codes.Unauthenticated, "no peer")
	}
	if _, internal := p.Addr.(pipeAddr); internal {
		v := metadata.ValueFromIncomingContext(ctx, identityKey)
		if len(v) != 1 {
			return pki.Identity{}, status.Error(codes.Unauthenticated, "a client certificate is required")
		}
		return decodeIdentity(v[0])
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return pki.Identity{}, status.Error(codes.Unauthenticated, "a client certificate is required")
	}
	id, ok := s.cfg.TLS.PeerIdentity(ti.State)
	if !ok {
		return pki.Identity{}, status.Error(codes.Unauthenticated, "a client certificate is required")
	}
	return id, nil
}

// authorise establishes the caller and checks the method against its role.
// Every decision about a patient's consent, allowed or denied, goes to the
// access log first.
func (s *Server) authorise(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if s.cfg.TLS == nil {
		// No identity, so no per-caller limit either: plain TCP is for
		// development and tests, which drive the register hard on purpose.
		return s.runLogged(ctx, pki.Identity{}, info.FullMethod, req, handler)
	}
	id, err := s.identify(ctx)
	if err == nil {
		err = allowed(id, info.FullMethod, req)
	}
	if err == nil {
		err = s.limit(id)
	}
	if err != nil {
		// Denied: logged with the error it gets, which it gets whether or
		// not the log could be written.
		s.logAccess(ctx, id, info.FullMethod, req, err)
		return nil, err
	}
	return s.runLogged(context.WithValue(ctx, callerKey{}, id), id, info.FullMethod, req, handler)
}

// authoriseStream admits only authenticated callers to streams (server
// reflection is the only one).
func (s *Server) authoriseStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if s.cfg.TLS != nil {
		if _, err := s.identify(ss.Context()); err != nil {
			return err
		}
	}
	return handler(srv, ss)
}

func allowed(id pki.Identity, method string, req any) error {
	if strings.HasPrefix(method, peerServicePrefix) {
		if !id.IsNode() {
			return status.Errorf(codes.PermissionDenied, "%s may not call the node-to-node service", id)
		}
		// A node joins only as itself: the raft id it claims must be the one
		// in its certificate.
		if j, ok := req.(*clusterv1.JoinRequest); ok && j.GetId() != id.NodeID {
			return status.Errorf(codes.PermissionDenied, "node %s may not join as %q", id.NodeID, j.GetId())
		}
		return nil
	}
	if strings.HasPrefix(method, "/grpc.reflection.") {
		return nil
	}
	if id.IsNode() {
		return status.Errorf(codes.PermissionDenied, "a node certificate (%s) is not a caller's", id.NodeID)
	}
	for _, r := range methodRoles[method] {
		if r == id.Role {
			return nil
		}
	}
	return status.Errorf(codes.PermissionDenied, "role %s may not call %s", id.Role, method)
}

// callerActor is recorded_by: always the authenticated caller, never the
// request body.
func callerActor(ctx context.Context) *commandv1.Actor {
	c := callerFrom(ctx)
	if c.Role == "" {
		return &commandv1.Actor{Role: "unauthenticated"}
	}
	return &commandv1.Actor{OdsCode: c.Org, UserId: c.Subject, Role: string(c.Role)}
}

// visibleReason shows a restricted reason only to auditors and to the
// organisation that recorded it.
func visibleReason(ctx context.Context, rec *commandv1.DecisionRecord) string {
	d := rec.GetDecision()
	if !d.GetRestricted() {
		return d.GetReason()
	}
	c := callerFrom(ctx)
	if c.Role == pki.RoleAuditor || (c.Org != "" && c.Org == d.GetRecordedBy().GetOdsCode()) {
		return d.GetReason()
	}
	return ""
}

func encodeIdentity(id pki.Identity) string {
	v := url.Values{}
	if id.IsNode() {
		v.Set("node", id.NodeID)
	} else {
		v.Set("org", id.Org)
		v.Set("role", string(id.Role))
		v.Set("subject", id.Subject)
	}
	return v.Encode()
}

func decodeIdentity(s string) (pki.Identity, error) {
	v, err := url.ParseQuery(s)
	if err != nil {
		return pki.Identity{}, status.Error(codes.Unauthenticated, "bad identity from the gateway")
	}
	id := pki.Identity{NodeID: v.Get("node"), Org: v.Get("org"), Role: pki.Role(v.Get("role")), Subject: v.Get("subject")}
	if id.NodeID == "" && (!pki.ValidOrg(id.Org) || !id.Role.Valid()) {
		return pki.Identity{}, status.Error(codes.Unauthenticated, "bad identity from the gateway")
	}
	return id, nil
}

// gatewayIdentity is the metadata the gateway adds to a REST call: the
// identity of the verified client certificate, if any.
func (s *Server) gatewayIdentity(_ context.Context, r *http.Request) metadata.MD {
	if s.cfg.TLS == nil || r.TLS == nil {
		return nil
	}
	id, ok := s.cfg.TLS.PeerIdentity(*r.TLS)
	if !ok {
		return nil
	}
	return metadata.Pairs(identityKey, encodeIdentity(id))
}

package api

import (
	"context"
	"fmt"
	"net"

	"github.com/lmc-consent/consentd/fsm"
	consentv1 "github.com/lmc-consent/consentd/proto/consent/v1"
)

type clusterService struct {
	consentv1.UnimplementedClusterServiceServer
	s *Server
}

func (c *clusterService) GetStatus(ctx context.Context, req *consentv1.GetStatusRequest) (*consentv1.GetStatusResponse, error) {
	st, err := c.s.cl.Status(ctx)
	if err != nil {
		return nil, c.s.grpcError(err)
	}
	st.Insecure, st.Version = c.s.cfg.Insecure, c.s.cfg.Version
	// The digest reads the whole register: only for those who compare nodes.
	if !req.GetIncludeDigest() {
		return st, nil
	}
	// Each register commits applied entries on its own timer; nodes that
	// have applied the same entries must show the same digest.
	if err := c.s.cl.Flush(ctx); err != nil {
		return nil, c.s.grpcError(err)
	}
	rev, digest, err := c.s.reg.Digest()
	if err != nil {
		return nil, c.s.grpcError(err)
	}
	st.StateDigest = digest
	// The digest is taken at rev, which may be past the index reported a
	// moment earlier; report the index the digest covers. An earlier index
	// above rev can only be rev carried over no-op entries (the register
	// only ever moves forward), the same state, so it stands.
	st.AppliedIndex = max(st.AppliedIndex, rev)
	return st, nil
}

func validHostPort(field, v string) error {
	host, port, err := net.SplitHostPort(v)
	if err != nil || host == "" || port == "" {
		return &fsm.FieldError{Field: field, Msg: fmt.Sprintf("%q must be host:port", v)}
	}
	return nil
}

func (c *clusterService) AddMember(ctx context.Context, req *consentv1.AddMemberRequest) (*consentv1.AddMemberResponse, error) {
	if req.GetId() == "" {
		return nil, c.s.grpcError(&fsm.FieldError{Field: "id", Msg: "is required"})
	}
	addrs := []struct{ field, v string }{{"raft_addr", req.GetRaftAddr()}, {"grpc_addr", req.GetGrpcAddr()}}
	if req.GetHttpAddr() != "" {
		addrs = append(addrs, struct{ field, v string }{"http_addr", req.GetHttpAddr()})
	}
	for _, a := range addrs {
		if err := validHostPort(a.field, a.v); err != nil {
			return nil, c.s.grpcError(err)
		}
	}
	if err := c.s.cl.AddMember(ctx, req); err != nil {
		return nil, c.s.grpcError(err)
	}
	st, err := c.s.cl.Status(ctx)
	if err != nil {
		return nil, c.s.grpcError(err)
	}
	return &consentv1.AddMemberResponse{Members: st.GetMembers()}, nil
}

func (c *clusterService) RemoveMember(ctx context.Context, req *consentv1.RemoveMemberRequest) (*consentv1.RemoveMemberResponse, error) {
	if req.GetId() == "" {
		return nil, c.s.grpcError(&fsm.FieldError{Field: "id", Msg: "is required"})
	}
	if err := c.s.cl.RemoveMember(ctx, req.GetId()); err != nil {
		return nil, c.s.grpcError(err)
	}
	st, err := c.s.cl.Status(ctx)
	if err != nil {
		return nil, c.s.grpcError(err)
	}
	return &consentv1.RemoveMemberResponse{Members: st.GetMembers()}, nil
}

package api

import (
	"context"
	"time"

	"github.com/lmc-consent/consentd/fsm"
	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
	consentv1 "github.com/lmc-consent/consentd/proto/consent/v1"
)

// Register is the query side of the local register; *fsm.Store satisfies
// it. Each query returns the revision (applied raft index) it read at.
type Register interface {
	GetConsents(nhs string) (uint64, []fsm.Consent, error)
	CheckConsents(kind string, nhs []string) (uint64, []fsm.CheckResult, error)
	ListDecisions(nhs, kind string, after uint64, limit int) (uint64, []*commandv1.DecisionRecord, uint64, error)
	Digest() (uint64, string, error)
	AppliedIndex() uint64
}

// Cluster is this node's view of the raft cluster; *cluster.Cluster
// satisfies it.
type Cluster interface {
	NodeID() string
	// Apply proposes an encoded command through the leader (forwarding if
	// needed) and returns the register's outcome. An error wrapping
	// raftnode.ErrOutcomeUnknown means it may or may not have committed.
	Apply(ctx context.Context, cmd []byte) (*commandv1.Result, error)
	// LinearizableRead returns a confirmed read index once the local
	// Register has applied at least that far.
	LinearizableRead(ctx context.Context) (uint64, error)
	// Flush returns once everything the local register has applied is
	// readable (registers commit on a timer; see raftnode.CommitInterval).
	Flush(ctx context.Context) error
	// StaleInfo says how far behind a local read may be.
	StaleInfo() (knownCommit uint64, sinceLeaderContact time.Duration)
	// Status fills id, state, leader, term, indexes and members; the API
	// adds what it owns (insecure, state digest, version).
	Status(ctx context.Context) (*consentv1.GetStatusResponse, error)
	AddMember(ctx context.Context, req *consentv1.AddMemberRequest) error
	RemoveMember(ctx context.Context, id string) error
}

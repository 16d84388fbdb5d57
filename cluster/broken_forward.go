package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"time"

	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/lmc-consent/consentd/proto/cluster/v1"
	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
)

// brokenAttemptTimeout bounds one forwarding attempt of the RetryWithoutDedup
// variant (internal/broken); production forwarding has no such bound.
const brokenAttemptTimeout = time.Second

// forwardRetryingWithoutDedup is the RetryWithoutDedup variant's forwarding:
// each attempt gets a second, and an attempt that timed out, failed in flight
// or ended with an unknown outcome is retried, against whoever leads now,
// with the command re-stamped under a fresh request id and decision id. The
// leader's de-duplication cannot recognise the retry, so a write whose first
// attempt committed is applied twice. Never used by a production build.
func (c *Cluster) forwardRetryingWithoutDedup(ctx context.Context, client clusterv1.PeerServiceClient, cmd []byte) (*clusterv1.ApplyResponse, error) {
	for {
		attempt, cancel := context.WithTimeout(ctx, brokenAttemptTimeout)
		resp, err := client.Apply(attempt, &clusterv1.ApplyRequest{Command: cmd})
		cancel()
		if err == nil && resp.GetOutcome() != clusterv1.Outcome_OUTCOME_UNKNOWN {
			return resp, nil
		}
		if rerr := c.retry(ctx, err); rerr != nil {
			return resp, err
		}
		if fresh, ferr := restampCommand(cmd); ferr == nil {
			cmd = fresh
		}
		if next, _, lerr := c.leaderClient(); lerr == nil {
			client = next
		}
	}
}

// restampCommand gives a write a fresh request id (and a recorded decision a
// fresh decision id), as a retry that forgot idempotency would.
func restampCommand(cmd []byte) ([]byte, error) {
	env := &commandv1.Envelope{}
	if err := proto.Unmarshal(cmd, env); err != nil {
		return nil, err
	}
	switch {
	case env.GetRecordDecision() != nil:
		env.GetRecordDecision().RequestId = freshID()
		env.GetRecordDecision().DecisionId = freshID()
	case env.GetMarkEnteredInError() != nil:
		env.GetMarkEnteredInError().RequestId = freshID()
	default:
		return cmd, nil
	}
	return proto.MarshalOptions{Deterministic: true}.Marshal(env)
}

func freshID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

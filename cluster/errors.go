package cluster

import "errors"

var (
	// ErrNoLeader: no leader is known (election under way or no quorum).
	ErrNoLeader = errors.New("no leader: election in progress or no quorum")
	// ErrMemberNotFound: no member has that id.
	ErrMemberNotFound = errors.New("no such member")
	// ErrForward: the leader could not be reached for a read index (a read
	// only: writes that fail in flight are reported as outcome unknown).
	ErrForward = errors.New("could not reach the leader")
)

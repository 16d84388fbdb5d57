package raftnode

import "errors"

// Errors that say what is known about a proposal or a read. The distinction
// between "not proposed" and "outcome unknown" is the point: the first is
// safe to retry anywhere, the second only with the same request id.
var (
	// ErrNotLeader: this node is not the leader; nothing was proposed.
	ErrNotLeader = errors.New("not the leader")
	// ErrNotReady: this node leads but has not yet confirmed its term with a
	// barrier, so it cannot serve a linearizable read.
	ErrNotReady = errors.New("leader not ready: term not yet confirmed")
	// ErrOutcomeUnknown: the entry was handed to raft but whether it committed
	// is not known (leadership lost, timeout or shutdown after enqueue).
	ErrOutcomeUnknown = errors.New("outcome unknown: the write may or may not have been committed")
	// ErrEnqueueTimeout: raft did not accept the entry in time; not proposed.
	ErrEnqueueTimeout = errors.New("timed out handing the entry to raft; not proposed")
	// ErrShutdown: the node is shutting down; nothing new is accepted.
	ErrShutdown = errors.New("node is shutting down")
)

// Package raftnode owns everything about *raft.Raft: its configuration, the
// raft-boltdb log and stable stores, the snapshot store, the transport and its
// stream layer, bootstrap, proposing entries with truthful outcomes, the
// leadership gate, linearizable read indexes, observers and membership.
//
// It replicates a StateMachine it declares itself, in plain types, so it does
// not import the register.
package raftnode

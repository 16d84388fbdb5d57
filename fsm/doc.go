// Package fsm owns the consent register as a state machine: the data model
// (kinds registry, NHS numbers, decisions), the projection of a patient's
// current state from their decisions, the idempotency table, and snapshot /
// restore of the whole register.
//
// It is pure and deterministic: applying the same entries in the same order
// gives byte-equal state on every node. Nothing here reads a clock, draws a
// random number, iterates a map, or touches the network; times and ids arrive
// already stamped in the commands. State lives in one bbolt database, and the
// applied raft index is written in the same transaction as the data it
// covers. Applied entries are committed together, on the caller's schedule
// (Commit): a restart resumes from the last commit, and raft applies the
// entries after it again from its log, to the same state.
//
// It knows nothing of raft: raftnode adapts a Store to raft's BatchingFSM
// through an interface of plain types that it declares.
package fsm

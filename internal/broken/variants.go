package broken

// EnvVar names the variant a node built with the consentd_broken tag runs
// as; empty or unset means none (the node then behaves like a production
// build). A production build ignores it.
const EnvVar = "CONSENTD_BROKEN"

// Variant names one deliberate bug.
type Variant string

// The variants, each switched on at one place in raftnode, cluster or api.
const (
	// LocalLeaderRead serves a linearizable read after only a local
	// State()==Leader check: no leadership gate, no VerifyLeader round.
	LocalLeaderRead Variant = "LocalLeaderRead"
	// NoBarrier opens the leadership gate as soon as an election is won,
	// without committing a barrier first.
	NoBarrier Variant = "NoBarrier"
	// AckBeforeCommit acknowledges a decision with a result predicted from
	// the local register while the proposal is still in flight.
	AckBeforeCommit Variant = "AckBeforeCommit"
	// UnknownAsFailure reports an unknown outcome (leadership lost, timeout
	// after the entry was handed to raft) as a definite failure.
	UnknownAsFailure Variant = "UnknownAsFailure"
	// RetryWithoutDedup makes a follower retry a forwarded write that timed
	// out or had an unknown outcome under a fresh request id.
	RetryWithoutDedup Variant = "RetryWithoutDedup"
)

// Variants lists every variant.
func Variants() []Variant {
	return []Variant{LocalLeaderRead, NoBarrier, AckBeforeCommit, UnknownAsFailure, RetryWithoutDedup}
}

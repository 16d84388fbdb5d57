// Package jepsen owns consentd's Jepsen-style fault suite: real consentd
// processes in network namespaces joined by a bridge, a seeded schedule of
// nemeses (nftables partitions and packet loss, SIGSTOP pauses, SIGKILL
// crashes, membership changes that replace a node under a fresh id), a
// workload of gRPC and REST clients recorded as an invoke/ok/fail/info
// history, and the checkers that judge a run from its
// saved report alone (linearizability with Porcupine, lost and aborted
// writes, stale reads, history reads, convergence, liveness, node logs and
// efficacy). cmd/consent-jepsen is its command-line runner.
//
// Traps. Scenario targeted-leader-change does not wait for a random fault
// to land in a window a few milliseconds wide: each of its steps sets up one
// read hazard of a leader change on purpose (trap_linux.go) and probes it
// with a patient of its own, recording the probe's operations in the
// history so that the ordinary checkers judge them. A step whose trap was
// never seen set makes the run inconclusive.
//
// Topology. Every run has a prefix (default "cj" plus the subnet's third
// octet). One namespace PREFIX-br holds a bridge and nothing else; each node
// gets a namespace PREFIX-nK with a veth to the bridge and an address in
// 10.213.OCTET.0/24; the controller namespace PREFIX-ctl has one more veth and
// is never partitioned. No namespace has a route out, and the /24 exists
// only inside them. Nodes run as `ip netns exec PREFIX-nK consentd ...`; the
// runner itself stays in the root namespace and reaches the nodes through
// sockets created by goroutines locked to OS threads that entered
// PREFIX-ctl (setns), so every client and status poll crosses the ctl veth.
// Partitions and loss are nftables rules in each node's own namespace
// (input hook, a set of source addresses to DROP, numgen for loss); the ctl
// address is never in a set. Stale namespaces of the same prefix are removed
// at start, and everything is torn down at the end, also on a signal; a
// crashed runner's leftovers are removed by the next run's start.
//
// Transport. Nodes run on plain TCP (--insecure) unless Config.TLS is set:
// then the binary's own `consentd certs` makes a CA and certificates in the
// run's work dir (one per raft id a slot can hold, replacements included,
// each valid for every node address), the nodes run with them and
// --rate-limit -1, and every client presents a caller certificate: practice
// for the workload, reader for the controller's status polls and final
// reads, lmc-admin for membership changes. CI runs partition-leader-bridge
// that way (CIRuns).
package jepsen

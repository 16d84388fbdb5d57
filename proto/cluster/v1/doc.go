// Package clusterv1 is the node-to-node API (generated): forwarding writes
// and read-index requests to the leader, and joining or leaving the cluster.
package clusterv1

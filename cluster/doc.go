// Package cluster owns nodes working together: forwarding writes and
// read-index requests to the leader over cluster/v1, joining through any
// member, the map from raft id to API addresses, and the local multi-node
// launcher used by `consentd dev` and tests.
package cluster

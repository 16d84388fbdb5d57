// Package pki owns who is who on the wire: the identities carried in
// certificates (a node of the cluster, or a caller with an organisation and
// a role), the TLS configurations of the three listeners and of node-to-node
// dialing, certificates reloaded from disk without a restart, and the
// development CA behind `consentd certs`.
//
// Identities are SPIFFE-style URI SANs, so one CA can issue both kinds and
// neither can pass for the other:
//
//	spiffe://<cluster>/node/<raft id>                 a consentd node
//	spiffe://<cluster>/org/<ODS code>/role/<role>     a caller; Subject CN = user id
//
// A node certificate has both server and client key usage; a caller
// certificate has client usage only, so it can never serve raft or the API.
package pki

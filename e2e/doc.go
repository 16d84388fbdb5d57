// Package e2e drives the real consentd binary: three processes started with
// the documented flags, used over REST and gRPC as a practice system would.
package e2e

// Package proto holds consentd's .proto sources and the Go generated from
// them; generate.sh regenerates everything and CI fails when it is stale.
package proto

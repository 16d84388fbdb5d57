//go:build !unix

package audit

// lockDir is a no-op where flock does not exist; run one node per Dir.
func lockDir(string) (func() error, error) { return func() error { return nil }, nil }

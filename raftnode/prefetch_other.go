//go:build !linux

package raftnode

import "os"

// readAhead does nothing where posix_fadvise is not at hand.
func readAhead(*os.File, int64, int64) error { return nil }

package raftnode

import (
	"os"

	"golang.org/x/sys/unix"
)

// readAhead starts reading one range of f into the page cache and returns
// at once. One call per entry, not one for the whole file: the kernel
// reads at most a readahead window per WILLNEED call.
func readAhead(f *os.File, off, n int64) error {
	return unix.Fadvise(int(f.Fd()), off, n, unix.FADV_WILLNEED)
}

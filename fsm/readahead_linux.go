package fsm

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// willNeed starts reading pg, part of a file's map, into the page cache and
// returns without waiting. The map is MADV_RANDOM (bbolt's choice), which
// only limits what a fault reads around itself, not an explicit request.
func willNeed(pg []byte) error { return unix.Madvise(pg, unix.MADV_WILLNEED) }

// notResident reports whether pg's first page is not in the page cache
// (mincore; x/sys/unix has no wrapper for it).
func notResident(pg []byte) (bool, error) {
	var vec [1]byte
	_, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(pg))), 1, uintptr(unsafe.Pointer(&vec[0])))
	if e != 0 {
		return false, e
	}
	return vec[0]&1 == 0, nil
}

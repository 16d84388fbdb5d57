package fsm

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// willNeed starts reading pg, part of a file's map, into the page cache and
// returns without waiting. The map is MADV_RANDOM (bbolt's choice), which
// only limits what a fault reads around itself, not an explicit request.
func willNeed(pg []byte) error { return unix.Madvise(pg, unix.MADV_WILLNEED) }

// notResident reports whether pg's first page is not in the page cache.
func notResident(pg []byte) (bool, error) {
	n, err := residentPages(pg[:min(len(pg), os.Getpagesize())])
	return n == 0, err
}

// residentPages counts the pages of b, part of a map, that are in the page
// cache (mincore; x/sys/unix has no wrapper for it).
func residentPages(b []byte) (int, error) {
	vec := make([]byte, (len(b)+os.Getpagesize()-1)/os.Getpagesize())
	_, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), uintptr(unsafe.Pointer(unsafe.SliceData(vec))))
	if e != 0 {
		return 0, e
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n, nil
}

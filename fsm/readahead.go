package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"unsafe"

	bolt "go.etcd.io/bbolt"
)

// Read-ahead for large checks.
//
// A lookup in a register larger than memory waits on the disk for each
// B+tree page that is not resident, and with bbolt's map each wait is a
// page fault. A goroutine in a page fault keeps its P (the Go scheduler
// hands a P on only from system calls), so however many goroutines look up
// at once, no more than GOMAXPROCS pages are read at a time: two on a
// 2-core node, where 1,000 cold lookups took 60-80 ms with 16 goroutines
// (75-100 ms with one). readAheadLookups walks the tree's branch pages
// itself, a level at a time, and asks the kernel for each level's pages
// all at once with MADV_WILLNEED (which queues the reads and returns), so
// the disk gets a thousand reads together and the lookups find their pages
// resident: 20-23 ms (BenchmarkCheckConsents1000Cold, 3M patients).
//
// It is only a hint. It reads bbolt's page format (stable since boltdb:
// a 16-byte header, then 16-byte branch elements) within one read
// transaction, whose pages bbolt neither moves nor reuses while it is open,
// and checks every bound before it reads; anything unexpected ends the
// read-ahead with an error and the lookups run as they would have.
// TestReadAheadFindsEachKeysLeaf fails if a bbolt upgrade changes what it
// relies on.

const (
	pageHeaderSize    = 16 // id uint64, flags uint16, count uint16, overflow uint32
	branchElementSize = 16 // pos uint32, ksize uint32, pgid uint64
	branchPageFlag    = 0x01
	leafPageFlag      = 0x02
	// maxTreeDepth bounds the walk; a bbolt tree of 2^64 keys is far shallower.
	maxTreeDepth = 32
	// residentSample is how many keys' leaves, and how many of a branch
	// level's pages, are tested with mincore before anything is advised:
	// when all are resident the register is taken to be in memory and
	// nothing is, as advising costs about 1.4 µs a page (a system call)
	// even when the page is resident.
	residentSample = 16
)

// readAheadMin is the smallest check worth reading ahead for: below it the
// walk costs more than the few faults it would overlap.
const readAheadMin = 64

// errPageFormat is a page the walk does not understand.
var errPageFormat = errors.New("fsm: read-ahead: unexpected bbolt page")

// readAheadStats says what one read-ahead did.
type readAheadStats struct {
	Levels  int // branch levels below the root
	Advised int // pages the kernel was asked to read
	Leaves  int // distinct leaf pages the keys lead to
}

// mapView reads pages of bbolt's map as one read transaction sees it.
type mapView struct {
	base     unsafe.Pointer // start of the map
	size     uint64         // bytes of it within the transaction's file size
	pageSize uint64
}

// newMapView finds the map's start from a key bbolt returns, which in a
// read transaction points into the map. ok is false for an empty bucket.
func newMapView(tx *bolt.Tx, b *bolt.Bucket) (m mapView, ok bool, err error) {
	k, _ := b.Cursor().First()
	if len(k) == 0 {
		return m, false, nil
	}
	info := tx.DB().Info()
	addr := uintptr(unsafe.Pointer(unsafe.SliceData(k)))
	size := uint64(tx.Size())
	if addr < info.Data || uint64(addr-info.Data) >= size || info.PageSize <= 0 {
		return m, false, fmt.Errorf("%w: a key outside the map", errPageFormat)
	}
	base := unsafe.Add(unsafe.Pointer(unsafe.SliceData(k)), -int(addr-info.Data))
	return mapView{base: base, size: size, pageSize: uint64(info.PageSize)}, true, nil
}

// first is the first page of id, without touching it.
func (m mapView) first(id uint64) ([]byte, error) {
	if id < 2 || id >= m.size/m.pageSize { // 0 and 1 are the meta pages
		return nil, fmt.Errorf("%w: page %d outside the file", errPageFormat, id)
	}
	return unsafe.Slice((*byte)(unsafe.Add(m.base, id*m.pageSize)), m.pageSize), nil
}

// page is page id with its overflow pages; it reads the header.
func (m mapView) page(id uint64) ([]byte, error) {
	pg, err := m.first(id)
	if err != nil {
		return nil, err
	}
	if got := binary.NativeEndian.Uint64(pg); got != id {
		return nil, fmt.Errorf("%w: page %d says it is %d", errPageFormat, id, got)
	}
	n := 1 + uint64(binary.NativeEndian.Uint32(pg[12:]))
	if id+n > m.size/m.pageSize {
		return nil, fmt.Errorf("%w: page %d overflows the file", errPageFormat, id)
	}
	return unsafe.Slice((*byte)(unsafe.Add(m.base, id*m.pageSize)), n*m.pageSize), nil
}

// pageFlags is the page's type.
func pageFlags(pg []byte) uint16 { return binary.NativeEndian.Uint16(pg[8:]) }

// branchChild is the child of branch page pg under which key lies: the last
// element whose key is not greater than key (the first when all are), as
// bbolt's own search chooses.
func branchChild(pg []byte, key []byte) (uint64, error) {
	if len(pg) < pageHeaderSize || pageFlags(pg) != branchPageFlag {
		return 0, fmt.Errorf("%w: not a branch page", errPageFormat)
	}
	count := int(binary.NativeEndian.Uint16(pg[10:]))
	if count == 0 || pageHeaderSize+count*branchElementSize > len(pg) {
		return 0, fmt.Errorf("%w: branch page of %d elements", errPageFormat, count)
	}
	var bad error
	elemKey := func(i int) []byte {
		e := pageHeaderSize + i*branchElementSize
		pos := uint64(binary.NativeEndian.Uint32(pg[e:]))
		ksize := uint64(binary.NativeEndian.Uint32(pg[e+4:]))
		// pos is relative to the element.
		if lo := uint64(e) + pos; lo+ksize <= uint64(len(pg)) {
			return pg[lo : lo+ksize]
		}
		bad = fmt.Errorf("%w: branch key %d outside its page", errPageFormat, i)
		return nil
	}
	exact := false
	i := sort.Search(count, func(i int) bool {
		c := bytes.Compare(elemKey(i), key)
		if c == 0 {
			exact = true
		}
		return c >= 0
	})
	if bad != nil {
		return 0, bad
	}
	if !exact && i > 0 {
		i--
	}
	return binary.NativeEndian.Uint64(pg[pageHeaderSize+i*branchElementSize+8:]), nil
}

// readAheadLookups asks the kernel to read, a level at a time, every page
// that looking up keys in b will touch (see the comment at the top), when
// the leaves of a sample of the keys are not all resident; a register in
// memory costs the sample and nothing more. It reads branch pages; of the
// leaves it only advises.
func readAheadLookups(tx *bolt.Tx, b *bolt.Bucket, keys [][]byte) (readAheadStats, error) {
	var st readAheadStats
	root := uint64(b.Root())
	if root == 0 || len(keys) == 0 {
		return st, nil // stored inline in its parent's page, or nothing to look up
	}
	m, ok, err := newMapView(tx, b)
	if err != nil || !ok {
		return st, err
	}
	depth, cold, err := probeLeaves(m, root, keys[:min(len(keys), residentSample)])
	if err != nil || !cold || depth < 2 {
		return st, err
	}
	leaves, err := walkToLeaves(m, root, depth, keys, func(level []uint64) error {
		st.Levels++
		n, err := adviseIfCold(m, level)
		st.Advised += n
		return err
	})
	if err != nil {
		return st, err
	}
	leaves = distinct(leaves)
	st.Leaves = len(leaves)
	n, err := adviseAll(m, leaves)
	st.Advised += n
	return st, err
}

// walkToLeaves returns the leaf page each key's lookup ends on, in a tree
// of the given depth (at least 2), reading branch pages a level at a time;
// before reading a level below the root it calls advise with its pages. It
// never touches a leaf.
func walkToLeaves(m mapView, root uint64, depth int, keys [][]byte, advise func(level []uint64) error) ([]uint64, error) {
	at := make([]uint64, len(keys))
	for i := range at {
		at[i] = root
	}
	// Levels 0 .. depth-2 are branch pages; level depth-1 the leaves.
	for d := 0; d < depth-1; d++ {
		level := distinct(at)
		if d > 0 {
			if err := advise(level); err != nil {
				return nil, err
			}
		}
		pages := make(map[uint64][]byte, len(level))
		for _, id := range level {
			pg, err := m.page(id)
			if err != nil {
				return nil, err
			}
			pages[id] = pg
		}
		for i, key := range keys {
			child, err := branchChild(pages[at[i]], key)
			if err != nil {
				return nil, err
			}
			at[i] = child
		}
	}
	return at, nil
}

// probeLeaves looks keys up by hand and reports the tree's depth (1: the
// root is a leaf) and whether any of their leaves is not resident; it stops
// at the first that is not. Residency is tested before a page is touched,
// which would read it: along the first key's path every page (its depth is
// not known yet), then only the leaves, which it does not touch.
func probeLeaves(m mapView, root uint64, keys [][]byte) (depth int, cold bool, err error) {
	for _, key := range keys {
		id := root
		for d := 1; ; d++ {
			if d > maxTreeDepth {
				return 0, false, fmt.Errorf("%w: deeper than %d levels", errPageFormat, maxTreeDepth)
			}
			if depth == 0 || d == depth {
				first, err := m.first(id)
				if err != nil {
					return 0, false, err
				}
				nr, err := notResident(first)
				if err != nil {
					return 0, false, err
				}
				cold = cold || nr
				if d == depth {
					break
				}
			}
			pg, err := m.page(id)
			if err != nil {
				return 0, false, err
			}
			if pageFlags(pg) == leafPageFlag {
				depth = d
				break
			}
			if id, err = branchChild(pg, key); err != nil {
				return 0, false, err
			}
		}
		if cold {
			return depth, true, nil
		}
	}
	return depth, false, nil
}

// distinct is ids without repeats, in first-seen order.
func distinct(ids []uint64) []uint64 {
	seen := make(map[uint64]struct{}, len(ids))
	out := make([]uint64, 0, len(ids))
	for _, id := range ids {
		if _, ok := seen[id]; !ok {
			seen[id] = struct{}{}
			out = append(out, id)
		}
	}
	return out
}

// adviseIfCold asks the kernel to read level's pages unless a sample of
// them is all resident; it returns how many it advised.
func adviseIfCold(m mapView, level []uint64) (int, error) {
	step := max(1, len(level)/residentSample)
	cold := false
	for i := 0; i < len(level) && !cold; i += step {
		pg, err := m.first(level[i])
		if err != nil {
			return 0, err
		}
		if cold, err = notResident(pg); err != nil {
			return 0, err
		}
	}
	if !cold {
		return 0, nil
	}
	return adviseAll(m, level)
}

// adviseAll asks the kernel to read ids' first pages; it returns how many
// it asked for.
func adviseAll(m mapView, ids []uint64) (int, error) {
	for i, id := range ids {
		pg, err := m.first(id)
		if err == nil {
			err = willNeed(pg)
		}
		if err != nil {
			return i, err
		}
	}
	return len(ids), nil
}

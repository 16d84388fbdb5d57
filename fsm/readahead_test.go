package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"path/filepath"
	"testing"
	"unsafe"

	bolt "go.etcd.io/bbolt"
)

// readAheadRegister builds a register deep enough that a lookup passes two
// levels of branch pages (20,000 patients: depth 3 with 4 KiB pages).
func readAheadRegister(t *testing.T) (path string, nums []string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "register.db")
	nums = NHSNumbersFrom(900_000_000, 20_000)
	buildColdRegister(t, path, nums)
	return path, nums
}

func checkKeys(nums []string) [][]byte {
	keys := make([][]byte, len(nums))
	for i, n := range nums {
		keys[i] = currentKey(n, "scr")
	}
	return keys
}

// The walk must end, for every key, on the leaf where bbolt itself finds
// the key: otherwise it reads the wrong pages ahead (and a bbolt that
// changed its page layout would show here, not as slower checks).
func TestReadAheadFindsEachKeysLeaf(t *testing.T) {
	path, nums := readAheadRegister(t)
	s, err := Open(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	present := checkKeys(nums[:5000])
	absent := checkKeys(NHSNumbersFrom(950_000_000, 200))
	keys := append(append([][]byte{}, present...), absent...)

	err = s.view(func(tx *bolt.Tx, _ uint64) error {
		b := tx.Bucket(bucketCurrent)
		m, ok, err := newMapView(tx, b)
		if err != nil || !ok {
			t.Fatalf("newMapView: ok=%t err=%v", ok, err)
		}
		root := uint64(b.Root())
		depth, _, err := probeLeaves(m, root, keys[:residentSample])
		if err != nil {
			t.Fatal(err)
		}
		if want := b.Stats().Depth; depth != want {
			t.Fatalf("probe found depth %d, bbolt says %d", depth, want)
		}
		if depth < 3 {
			t.Fatalf("depth %d: the test needs two branch levels to walk", depth)
		}
		var levels [][]uint64
		leaves, err := walkToLeaves(m, root, depth, keys, func(level []uint64) error {
			levels = append(levels, level)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(levels) != depth-2 {
			t.Fatalf("advised %d levels below the root, want %d", len(levels), depth-2)
		}
		c := b.Cursor()
		for i, key := range present {
			k, _ := c.Seek(key)
			if !bytes.Equal(k, key) {
				t.Fatalf("key %q not in the register", key)
			}
			addr := uint64(uintptr(unsafe.Pointer(unsafe.SliceData(k))))
			lo := uint64(uintptr(m.base)) + leaves[i]*m.pageSize
			if addr < lo || addr >= lo+m.pageSize {
				t.Fatalf("key %q: walk ends on page %d, bbolt finds it on page %d",
					key, leaves[i], (addr-uint64(uintptr(m.base)))/m.pageSize)
			}
		}
		for i := range absent {
			pg, err := m.page(leaves[len(present)+i])
			if err != nil || pageFlags(pg) != leafPageFlag {
				t.Fatalf("absent key %d: walk ends on page %d, not a leaf (err %v)", i, leaves[len(present)+i], err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// branchPage lays out a branch page as bbolt writes one.
func branchPage(id uint64, keys []string, children []uint64) []byte {
	pg := make([]byte, 4096)
	binary.NativeEndian.PutUint64(pg, id)
	binary.NativeEndian.PutUint16(pg[8:], branchPageFlag)
	binary.NativeEndian.PutUint16(pg[10:], uint16(len(keys)))
	data := pageHeaderSize + len(keys)*branchElementSize
	for i, k := range keys {
		e := pageHeaderSize + i*branchElementSize
		binary.NativeEndian.PutUint32(pg[e:], uint32(data-e))
		binary.NativeEndian.PutUint32(pg[e+4:], uint32(len(k)))
		binary.NativeEndian.PutUint64(pg[e+8:], children[i])
		data += copy(pg[data:], k)
	}
	return pg
}

func TestBranchChild(t *testing.T) {
	pg := branchPage(7, []string{"b", "d", "f"}, []uint64{10, 20, 30})
	for _, tc := range []struct {
		key  string
		want uint64
	}{
		{"a", 10}, {"b", 10}, {"c", 10}, {"d", 20}, {"dd", 20}, {"e", 20}, {"f", 30}, {"z", 30},
	} {
		got, err := branchChild(pg, []byte(tc.key))
		if err != nil || got != tc.want {
			t.Errorf("branchChild(%q) = %d, %v; want %d", tc.key, got, err, tc.want)
		}
	}

	leaf := bytes.Clone(pg)
	binary.NativeEndian.PutUint16(leaf[8:], leafPageFlag)
	empty := bytes.Clone(pg)
	binary.NativeEndian.PutUint16(empty[10:], 0)
	tooMany := bytes.Clone(pg)
	binary.NativeEndian.PutUint16(tooMany[10:], 300)
	keyOutside := bytes.Clone(pg)
	binary.NativeEndian.PutUint32(keyOutside[pageHeaderSize+branchElementSize:], 5000)
	for name, bad := range map[string][]byte{
		"leaf": leaf, "no elements": empty, "more elements than fit": tooMany,
		"a key outside the page": keyOutside, "short": pg[:10],
	} {
		if _, err := branchChild(bad, []byte("c")); !errors.Is(err, errPageFormat) {
			t.Errorf("%s: err = %v, want errPageFormat", name, err)
		}
	}
}

// FuzzBranchChild: whatever a page holds, the walk errs rather than reads
// outside it.
func FuzzBranchChild(f *testing.F) {
	f.Add(branchPage(7, []string{"b", "d", "f"}, []uint64{10, 20, 30}), []byte("c"))
	f.Add(branchPage(7, []string{"9000000019scr"}, []uint64{3}), []byte("9000000027scr"))
	f.Fuzz(func(t *testing.T, pg, key []byte) {
		child, err := branchChild(pg, key)
		if err != nil {
			return
		}
		// A child is always one of the page's elements.
		count := int(binary.NativeEndian.Uint16(pg[10:]))
		for i := range count {
			if binary.NativeEndian.Uint64(pg[pageHeaderSize+i*branchElementSize+8:]) == child {
				return
			}
		}
		t.Fatalf("child %d is none of the page's %d elements", child, count)
	})
}

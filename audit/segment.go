package audit

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

const (
	segmentPrefix = "access-"
	segmentSuffix = ".jsonl"
	// seqDigits zero-pads the first seq so names sort in log order; 20
	// digits hold any uint64.
	seqDigits = 20
	// lockName is held (flock) while a Log is open, so two processes never
	// write one directory and hand out the same seq numbers.
	lockName = "access.lock"
)

// segment is one file of the log as readers see it.
type segment struct {
	name  string // base name in Dir
	first uint64 // seq the file was created for; its entries are >= first
	// limit is how many bytes from the start hold complete, durable lines:
	// the active file's fsynced size, or the size at which a file was sealed
	// after a failed write. -1 means the whole file (sealed before Open).
	limit int64
}

func segmentName(first uint64) string {
	return fmt.Sprintf("%s%0*d%s", segmentPrefix, seqDigits, first, segmentSuffix)
}

func parseSegmentName(name string) (uint64, bool) {
	digits, ok := strings.CutPrefix(name, segmentPrefix)
	if !ok {
		return 0, false
	}
	digits, ok = strings.CutSuffix(digits, segmentSuffix)
	if !ok || len(digits) != seqDigits {
		return 0, false
	}
	first, err := strconv.ParseUint(digits, 10, 64)
	if err != nil || first == 0 {
		return 0, false
	}
	return first, true
}

// listSegments returns Dir's log files in seq order; other files (an
// auditor's notes, the lock) are left alone.
func listSegments(dir string) ([]segment, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var segs []segment
	for _, de := range des {
		first, ok := parseSegmentName(de.Name())
		if !ok || !de.Type().IsRegular() {
			continue
		}
		segs = append(segs, segment{name: de.Name(), first: first, limit: -1})
	}
	slices.SortFunc(segs, func(a, b segment) int {
		switch {
		case a.first < b.first:
			return -1
		case a.first > b.first:
			return 1
		}
		return 0
	})
	return segs, nil
}

// scanLines calls fn with each newline-terminated line of r, newline
// stripped, until fn returns false. A line longer than maxLineBytes is passed
// cut to maxLineBytes+1 bytes, which decodeLine rejects. It returns how many
// bytes follow the last newline: a torn tail, not a line.
func scanLines(r io.Reader, fn func(line []byte) bool) (tail int64, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var long []byte // a line spanning more than one buffer
	var pending int64
	for {
		frag, err := br.ReadSlice('\n')
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			pending += int64(len(frag))
			if room := maxLineBytes + 1 - len(long); room > 0 {
				long = append(long, frag[:min(room, len(frag))]...)
			}
			continue
		case errors.Is(err, io.EOF):
			return pending + int64(len(frag)), nil
		case err != nil:
			return 0, err
		}
		line := frag[:len(frag)-1]
		if pending > 0 {
			if room := maxLineBytes + 1 - len(long); room > 0 {
				long = append(long, line[:min(room, len(line))]...)
			}
			line = long
		}
		if !fn(line) {
			return 0, nil
		}
		long, pending = long[:0], 0
	}
}

// terminateTornTail makes a file that does not end in a newline end in one,
// so the torn bytes of a crashed write become a line of their own (skipped if
// undecodable) instead of being glued to the next entry or cut off. Files
// that end well are only read, so archived read-only files do not stop Open.
// It reports whether it wrote.
func terminateTornTail(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return false, err
	}
	last := make([]byte, 1)
	if _, err := f.ReadAt(last, fi.Size()-1); err != nil {
		return false, err
	}
	if last[0] == '\n' {
		return false, nil
	}
	w, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return false, err
	}
	if _, err := w.Write([]byte{'\n'}); err != nil {
		w.Close()
		return false, err
	}
	if err := w.Sync(); err != nil {
		w.Close()
		return false, err
	}
	return true, w.Close()
}

// recoverSeq reads a file for the highest seq of a decodable line and counts
// the lines it could not decode.
func recoverSeq(path string) (maxSeq uint64, bad int, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	_, err = scanLines(f, func(line []byte) bool {
		e, derr := decodeLine(line)
		if derr != nil {
			bad++
			return true
		}
		maxSeq = max(maxSeq, e.Seq)
		return true
	})
	return maxSeq, bad, err
}

// syncDir makes a file's creation or removal in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		d.Close()
		return err
	}
	return d.Close()
}

// segmentFile is what the writer needs of the active file; tests substitute
// one that fails.
type segmentFile interface {
	Write(p []byte) (int, error)
	Sync() error
	Close() error
}

// openSegmentFile opens (or creates) a log file for appending and returns its
// current size.
func openSegmentFile(path string) (segmentFile, int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, fi.Size(), nil
}

func segmentPath(dir, name string) string { return filepath.Join(dir, name) }

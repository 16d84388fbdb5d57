// Package memlimit owns one process-wide setting: the Go runtime's soft
// memory limit, taken from the memory cgroup the process runs in.
//
// Go does not read a cgroup's limit. Without a soft limit its heap may grow
// to twice the live data before it collects, and the kernel kills a node
// held to a few hundred megabytes first: a follower catching up from an
// empty disk holds about 160 MB live, and was OOM-killed at 308 MB in a
// 300 MiB cgroup. With the soft limit at a fraction of the cap the collector
// works harder near the cap instead, and the rest stays for the page cache
// the register is read through.
package memlimit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
)

// DefaultFraction of the cgroup's limit becomes the soft limit.
const DefaultFraction = 0.8

// Sources are where the cgroup files live; Linux's by default, a test's
// files otherwise.
type Sources struct {
	ProcSelfCgroup string // /proc/self/cgroup
	CgroupRoot     string // /sys/fs/cgroup
}

// LinuxSources are the real files.
func LinuxSources() Sources {
	return Sources{ProcSelfCgroup: "/proc/self/cgroup", CgroupRoot: "/sys/fs/cgroup"}
}

// CgroupLimit returns the memory limit, in bytes, of the cgroup this
// process is in (v2, or v1's memory controller); 0 when there is none.
func (s Sources) CgroupLimit() (int64, error) {
	data, err := os.ReadFile(s.ProcSelfCgroup)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, nil // not Linux, or no /proc
		}
		return 0, err
	}
	v2, v1 := parseProcCgroup(data)
	var candidates []string
	if v2 != "" || bytes.HasPrefix(data, []byte("0::")) {
		candidates = append(candidates, filepath.Join(s.CgroupRoot, v2, "memory.max"))
	}
	if v1 != "" {
		candidates = append(candidates, filepath.Join(s.CgroupRoot, "memory", v1, "memory.limit_in_bytes"))
	}
	for _, path := range candidates {
		b, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, err
		}
		limit, err := parseLimit(b)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", path, err)
		}
		return limit, nil
	}
	return 0, nil
}

// parseProcCgroup returns the process's cgroup v2 path ("0::PATH") and its
// v1 memory controller path ("N:...memory...:PATH").
func parseProcCgroup(data []byte) (v2, v1 string) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		id, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		controllers, path, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		switch {
		case id == "0" && controllers == "":
			v2 = path
		case v1 == "" && hasController(controllers, "memory"):
			v1 = path
		}
	}
	return v2, v1
}

func hasController(list, name string) bool {
	for c := range strings.SplitSeq(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

// noLimit is above any real memory: v1 reports "no limit" as a huge
// page-rounded number rather than "max".
const noLimit = 1 << 60

// parseLimit reads memory.max or memory.limit_in_bytes; 0 means no limit.
func parseLimit(b []byte) (int64, error) {
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("memory limit %q: %w", s, err)
	}
	if v == 0 || v >= noLimit {
		return 0, nil
	}
	return int64(v), nil
}

// Decision is what Apply did and why, for the log.
type Decision struct {
	// Limit is the soft limit set, 0 if none.
	Limit int64
	// Cgroup is the cgroup's limit it came from, 0 if none.
	Cgroup int64
	// Reason says why no limit was set, if none was.
	Reason string
}

// Apply sets the runtime's soft memory limit to fraction of the cgroup's
// limit, unless GOMEMLIMIT (getenv) already sets one: an operator's choice
// wins. fraction must be in (0, 1].
func (s Sources) Apply(fraction float64, getenv func(string) string) (Decision, error) {
	if fraction <= 0 || fraction > 1 {
		return Decision{}, fmt.Errorf("memlimit: fraction %v: want (0, 1]", fraction)
	}
	if v := getenv("GOMEMLIMIT"); v != "" {
		return Decision{Reason: "GOMEMLIMIT=" + v + " set"}, nil
	}
	limit, err := s.CgroupLimit()
	if err != nil {
		return Decision{}, fmt.Errorf("memlimit: %w", err)
	}
	if limit == 0 {
		return Decision{Reason: "no cgroup memory limit"}, nil
	}
	soft := int64(float64(limit) * fraction)
	debug.SetMemoryLimit(soft)
	return Decision{Limit: soft, Cgroup: limit}, nil
}

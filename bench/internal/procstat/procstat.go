// Package procstat reads what the benchmarks measure of a running process
// from /proc: CPU time and resident memory. Linux only, standard library
// only.
package procstat

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// CPUTicks is utime+stime of pid, in clock ticks (see ClockTicks).
func CPUTicks(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return ParseStatTicks(string(b))
}

// SumTicks adds the CPU ticks of every pid.
func SumTicks(pids []int) (uint64, error) {
	var total uint64
	for _, pid := range pids {
		t, err := CPUTicks(pid)
		if err != nil {
			return 0, err
		}
		total += t
	}
	return total, nil
}

// ParseStatTicks reads fields 14 and 15 (utime, stime) of a /proc/PID/stat
// line; the command name (field 2) may hold spaces, so count after its ')'.
func ParseStatTicks(stat string) (uint64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("stat: no ')'")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state), so utime (14) is f[11] and stime (15) f[12].
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after the name", len(f))
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("stat: %w", err)
	}
	return u + s, nil
}

// ClockTicks is the kernel's USER_HZ as getconf reports it (100 when it cannot).
func ClockTicks() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err != nil {
		return 100
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil || n <= 0 {
		return 100
	}
	return float64(n)
}

// Memory is a process's resident set: anonymous memory (heap, stacks) and
// file-backed pages (files mapped in, which the kernel may drop and read
// again), in bytes.
type Memory struct {
	RSS, Anon, File int64
}

// ReadMemory reads pid's resident set from /proc/PID/status.
func ReadMemory(pid int) (Memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, err
	}
	defer f.Close()
	return parseStatus(bufio.NewScanner(f))
}

func parseStatus(sc *bufio.Scanner) (Memory, error) {
	var m Memory
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 || fields[2] != "kB" {
			continue
		}
		kb, err := strconv.ParseInt(fields[1], 10, 64)
		if err != nil {
			continue
		}
		switch fields[0] {
		case "VmRSS:":
			m.RSS = kb << 10
		case "RssAnon:":
			m.Anon = kb << 10
		case "RssFile:":
			m.File = kb << 10
		}
	}
	return m, sc.Err()
}

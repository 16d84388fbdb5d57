package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// memoryCap puts a process into a memory cgroup of its own with a hard
// limit, so a run can show the register working on a node with that much
// memory: the kernel then keeps the mmapped register's file-backed pages
// within the limit by evicting them, which plain RSS readings never show
// on a machine with memory to spare. Needs root; cgroup v2 or v1.
type memoryCap struct {
	dir string
}

// newMemoryCap makes the cgroup; a process joins it by writing its pid to
// procsFile.
func newMemoryCap(name string, limit int64) (*memoryCap, error) {
	var dir, limitFile string
	switch {
	case fileExists("/sys/fs/cgroup/cgroup.controllers"): // v2, unified at the root
		dir, limitFile = filepath.Join("/sys/fs/cgroup", name), "memory.max"
	case fileExists("/sys/fs/cgroup/memory/memory.limit_in_bytes"): // v1
		dir, limitFile = filepath.Join("/sys/fs/cgroup/memory", name), "memory.limit_in_bytes"
	default:
		return nil, errors.New("no memory cgroup controller found (needs cgroup v2 or v1 with memory)")
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
		return nil, fmt.Errorf("memory cap: %w", err)
	}
	c := &memoryCap{dir: dir}
	if err := os.WriteFile(filepath.Join(dir, limitFile), []byte(strconv.FormatInt(limit, 10)), 0o644); err != nil {
		c.remove()
		return nil, fmt.Errorf("memory cap: set limit: %w", err)
	}
	return c, nil
}

func (c *memoryCap) procsFile() string { return filepath.Join(c.dir, "cgroup.procs") }

// remove deletes the cgroup; it must be empty (its process exited).
func (c *memoryCap) remove() {
	if c != nil {
		os.Remove(c.dir)
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// Package testnet owns how tests pick loopback addresses for nodes that must
// keep their ports across a restart.
//
// Two things went wrong with "listen on port 0, close, reuse the number":
// the kernel hands the same just-closed port to the next process that asks
// (two test packages running in parallel then start nodes on one port), and
// every outgoing connection draws its source port from that same ephemeral
// range. So ports come from below the ephemeral range, where only listeners
// live, and each is reserved across processes with a lock file held until the
// test ends.
package testnet

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Below Linux's default ip_local_port_range (32768-60999) and above the
// ports well-known services use.
const (
	lowPort  = 20000
	highPort = 32000
)

// FreeAddr returns a 127.0.0.1 address whose port is free now, lies outside
// the ephemeral range, and is handed to no other test of any process until
// t ends.
func FreeAddr(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(os.TempDir(), "consentd-test-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		t.Fatalf("testnet: %v", err)
	}
	for range 500 {
		port := lowPort + rand.IntN(highPort-lowPort)
		lock, ok := reserve(filepath.Join(dir, fmt.Sprint(port)))
		if !ok {
			continue
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			lock.Close()
			continue
		}
		ln.Close()
		t.Cleanup(func() { lock.Close() })
		return addr
	}
	t.Fatal("testnet: no free port found below the ephemeral range")
	return ""
}

// reserve takes an exclusive lock on path; the kernel drops it when the file
// is closed or the process dies, so a crashed test leaks nothing.
func reserve(path string) (*os.File, bool) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, false
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	return f, true
}

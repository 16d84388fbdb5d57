package testnet

import (
	"net"
	"path/filepath"
	"strconv"
	"testing"
)

func TestFreeAddrIsReservedAndOutsideEphemeralRange(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		addr := FreeAddr(t)
		if seen[addr] {
			t.Fatalf("%s handed out twice", addr)
		}
		seen[addr] = true
		_, p, _ := net.SplitHostPort(addr)
		port, _ := strconv.Atoi(p)
		if port < lowPort || port >= highPort {
			t.Fatalf("port %d outside [%d,%d)", port, lowPort, highPort)
		}
	}
}

func TestReserveIsExclusive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p")
	a, ok := reserve(path)
	if !ok {
		t.Fatal("first reservation refused")
	}
	if b, ok := reserve(path); ok {
		b.Close()
		t.Fatal("second reservation of a held port granted")
	}
	a.Close()
	b, ok := reserve(path)
	if !ok {
		t.Fatal("reservation not released on close")
	}
	b.Close()
}

package api

import (
	"io"
	"net"
	"testing"
	"time"
)

// TestSlowClientIsCutOff: a client that trickles its request headers
// (slowloris) is disconnected after ReadHeaderTimeout instead of holding a
// connection for as long as it likes.
func TestSlowClientIsCutOff(t *testing.T) {
	h := newHarness(t, fakeBackend, func(c *Config) { c.ReadHeaderTimeout = 300 * time.Millisecond })
	conn, err := net.Dial("tcp", h.srv.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /livez HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	io.ReadAll(conn) // returns when the server closes the connection
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("a connection with unfinished headers was kept %v", took)
	}
}

// TestConnectionLimit: connections beyond MaxConnections wait; they are
// served once others close.
func TestConnectionLimit(t *testing.T) {
	h := newHarness(t, fakeBackend, func(c *Config) { c.MaxConnections = 1 })
	first, err := net.Dial("tcp", h.srv.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	// The first connection is accepted and idle; a second request waits.
	if _, err := io.WriteString(first, "GET /livez HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 12)
	first.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(first, buf); err != nil || string(buf) != "HTTP/1.1 200" {
		t.Fatalf("first connection: %q %v", buf, err)
	}
	second, err := net.Dial("tcp", h.srv.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	io.WriteString(second, "GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
	second.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if n, _ := second.Read(buf); n > 0 {
		t.Fatal("a connection over the limit was served while the first was open")
	}
	first.Close()
	second.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(second, buf); err != nil || string(buf) != "HTTP/1.1 200" {
		t.Fatalf("second connection after the first closed: %q %v", buf, err)
	}
}

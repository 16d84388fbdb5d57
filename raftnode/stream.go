package raftnode

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// tcpStreamLayer is raft's stream layer over TCP, optionally mutual TLS.
// It is ours and not raft.NewTCPTransport so that TLS fits in.
type tcpStreamLayer struct {
	net.Listener
	advertise            net.Addr
	serverTLS, clientTLS *tls.Config
}

// handshakeTimeout bounds a TLS handshake on the raft port, so a peer that
// connects and sends nothing cannot hold a goroutine forever.
const handshakeTimeout = 10 * time.Second

func newTCPStreamLayer(bind, advertise string, serverTLS, clientTLS *tls.Config) (*tcpStreamLayer, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("raft listen %s: %w", bind, err)
	}
	adv := ln.Addr()
	if advertise != "" {
		a, err := net.ResolveTCPAddr("tcp", advertise)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("raft advertise address %s: %w", advertise, err)
		}
		adv = a
	}
	if tcp, ok := adv.(*net.TCPAddr); ok && tcp.IP.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("raft address %s is unspecified: set an advertise address other nodes can dial", adv)
	}
	return &tcpStreamLayer{Listener: ln, advertise: adv, serverTLS: serverTLS, clientTLS: clientTLS}, nil
}

func (t *tcpStreamLayer) Addr() net.Addr { return t.advertise }

// Accept hands raft the connection at once and leaves the handshake to the
// connection's first read or write: raft accepts in one loop, and a slow
// handshake there would stall every other peer.
func (t *tcpStreamLayer) Accept() (net.Conn, error) {
	c, err := t.Listener.Accept()
	if err != nil || t.serverTLS == nil {
		return c, err
	}
	return &lazyHandshake{Conn: tls.Server(c, t.serverTLS)}, nil
}

func (t *tcpStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	if t.clientTLS == nil {
		return d.Dial("tcp", string(address))
	}
	return (&tls.Dialer{NetDialer: d, Config: t.clientTLS}).Dial("tcp", string(address))
}

// lazyHandshake completes the TLS handshake, bounded by handshakeTimeout,
// before the first byte is read or written.
type lazyHandshake struct {
	*tls.Conn
	once sync.Once
	err  error
}

func (c *lazyHandshake) handshake() error {
	c.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
		defer cancel()
		c.err = c.Conn.HandshakeContext(ctx)
		if c.err != nil {
			c.Conn.Close()
		}
	})
	return c.err
}

func (c *lazyHandshake) Read(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *lazyHandshake) Write(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

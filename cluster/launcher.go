package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
)

// NodeSpec is everything a launcher decides about one local node.
type NodeSpec struct {
	ID        string
	DataDir   string
	RaftAddr  string
	GRPCAddr  string
	HTTPAddr  string
	Bootstrap bool
	Join      []string
}

// Running is a started node as the launcher sees it.
type Running interface {
	ID() string
	GRPCAddr() string
	HTTPAddr() string
	Shutdown(ctx context.Context) error
}

// Launcher starts a local multi-node cluster in one process: n1 bootstraps
// and the others join it. It is used by `consentd dev` and by tests; how a
// node is built is the caller's (StartNode), so this package stays free of
// the API and the register.
type Launcher struct {
	Nodes   int
	BaseDir string
	Host    string // default 127.0.0.1
	// Base ports: node i uses base+i-1. Zero picks free ports.
	RaftPort, GRPCPort, HTTPPort int
	StartNode                    func(ctx context.Context, spec NodeSpec) (Running, error)
}

// Specs returns the node specs Launch would use.
func (l *Launcher) Specs() ([]NodeSpec, error) {
	if l.Nodes < 1 {
		return nil, errors.New("launcher: at least one node")
	}
	host := l.Host
	if host == "" {
		host = "127.0.0.1"
	}
	addr := func(base, i int) string {
		if base == 0 {
			return net.JoinHostPort(host, "0")
		}
		return net.JoinHostPort(host, strconv.Itoa(base+i))
	}
	specs := make([]NodeSpec, l.Nodes)
	for i := range specs {
		id := fmt.Sprintf("n%d", i+1)
		specs[i] = NodeSpec{
			ID: id, DataDir: filepath.Join(l.BaseDir, id),
			RaftAddr: addr(l.RaftPort, i), GRPCAddr: addr(l.GRPCPort, i), HTTPAddr: addr(l.HTTPPort, i),
			Bootstrap: i == 0,
		}
	}
	return specs, nil
}

// Launch starts every node and returns them in order. It does not wait for
// a leader: on a restart no node can elect itself until a quorum is up.
func (l *Launcher) Launch(ctx context.Context) ([]Running, error) {
	specs, err := l.Specs()
	if err != nil {
		return nil, err
	}
	var started []Running
	for i, spec := range specs {
		if i > 0 {
			spec.Join = []string{started[0].GRPCAddr()}
		}
		r, err := l.StartNode(ctx, spec)
		if err != nil {
			for j := len(started) - 1; j >= 0; j-- {
				started[j].Shutdown(context.Background())
			}
			return nil, fmt.Errorf("launcher: start %s: %w", spec.ID, err)
		}
		started = append(started, r)
	}
	return started, nil
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// system is one of the two clusters under test.
type system interface {
	Name() string
	Start(ctx context.Context) error
	// Stop ends every node; it is safe to call more than once.
	Stop()
	// Target is the node the load tools use: the current leader, or a follower.
	Target(ctx context.Context, follower bool) (node, error)
	// Preload writes the keys the read runs read.
	Preload(ctx context.Context) error
	// Revision is the cluster's revision as the node reports it: a write
	// run must raise it at least once per acknowledged write.
	Revision(ctx context.Context, n node) (uint64, error)
	PIDs() []int
	// Workload is what the load tool sends for op over protocol.
	Workload(op, protocol string) (workload, error)
}

// keyCounter is a system that can count what the write runs created: a
// write that repeated an earlier one's key adds nothing.
type keyCounter interface {
	WrittenKeys(ctx context.Context, n node) (uint64, error)
}

// node is one member as the load tools reach it.
type node struct {
	ID       string
	GRPCAddr string
	HTTPAddr string
}

// workload is what one load tool sends. For gRPC: the call, its .proto (or
// none: server reflection) and ghz's data (JSON, templated); for REST: a
// wrk Lua script.
type workload struct {
	Call        string
	Proto       string
	ImportPaths []string
	Data        string
	Lua         string
}

// proc is one server process.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	err  error
}

func startProc(name, logPath, bin string, args ...string) (*proc, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	// Own process group, so Ctrl-C reaches only this program, which then
	// stops the nodes in order; die with it if it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: lf, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and, after grace, SIGKILL.
func (p *proc) stop(grace time.Duration) {
	if p == nil || p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func stopAll(procs []*proc, log *slog.Logger) {
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() {
			p.stop(15 * time.Second)
			log.Debug("stopped", "node", p.name, "exit", p.err)
		})
	}
	wg.Wait()
}

// portPicker hands out distinct free loopback ports in 20000–32000.
type portPicker struct {
	used map[int]bool
}

func (pp *portPicker) addr() (string, error) {
	if pp.used == nil {
		pp.used = map[int]bool{}
	}
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		if pp.used[port] {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		ln.Close()
		pp.used[port] = true
		return ln.Addr().String(), nil
	}
	return "", errors.New("no free port in 20000-32000")
}

// httpJSON sends body (if not nil) as JSON and decodes a 2xx answer into out.
func httpJSON(ctx context.Context, client *http.Client, method, url string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, bytes.TrimSpace(raw))
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s %s: decode %s: %w", method, url, raw, err)
		}
	}
	return nil
}

// waitFor polls cond until it succeeds, ctx ends or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() error) error {
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = cond(); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %v: %w", what, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// parallel runs f(0..n-1) on workers goroutines and returns the first error.
func parallel(ctx context.Context, n, workers int, f func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := f(ctx, i); err != nil {
					cancel(err)
				}
			}
		})
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	return context.Cause(ctx)
}

// tailFile is the last n bytes of a log, for error messages.
func tailFile(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		f.Seek(st.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// absPath is p made absolute, so the tools can run from any directory.
func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/lmc-consent/consentd/bench/internal/procstat"
)

// runSpec is one run of one load tool against one system.
type runSpec struct {
	System   string
	Op       string
	Protocol string
	Conc     int
	Rep      int // 0 for a warm-up
	Target   node
	Work     workload
	// Files: the workload's data or script, and where the tool's raw output goes.
	WorkFile string
	RawFile  string
	// RunID is unique to this run of the tool; wrk scripts put it in every
	// write's id or key (ghz's {{newUUID}} needs none).
	RunID string
}

// toolCommand is the ghz or wrk command line for s.
func toolCommand(cfg Config, s runSpec) (string, []string) {
	timeout := cfg.Timeout.String()
	if s.Protocol == "grpc" {
		args := []string{"--insecure"}
		if s.Work.Proto != "" {
			args = append(args, "--proto", s.Work.Proto)
		}
		if len(s.Work.ImportPaths) > 0 {
			args = append(args, "--import-paths", strings.Join(s.Work.ImportPaths, ","))
		}
		args = append(args, "--call", s.Work.Call, "--data-file", s.WorkFile,
			"-c", strconv.Itoa(s.Conc), "--connections", strconv.Itoa(cfg.ghzConns(s.Conc)),
			"-z", cfg.runDuration(s).String(), "-t", timeout,
			"-O", "json", "-o", s.RawFile, s.Target.GRPCAddr)
		return cfg.GhzBin, args
	}
	return cfg.WrkBin, []string{"-t", strconv.Itoa(cfg.wrkThreads(s.Conc)), "-c", strconv.Itoa(s.Conc),
		"-d", durationSeconds(cfg.runDuration(s)), "--timeout", durationSeconds(cfg.Timeout), "--latency",
		"-s", s.WorkFile, "http://" + s.Target.HTTPAddr + "/", "--", s.RunID}
}

func (c Config) runDuration(s runSpec) time.Duration {
	if s.Rep == 0 {
		return c.Warmup
	}
	return c.Duration
}

// durationSeconds is d as wrk wants it: whole seconds, at least 1.
func durationSeconds(d time.Duration) string {
	return strconv.Itoa(max(1, int((d+time.Second/2)/time.Second))) + "s"
}

// measurement is one measured run, as the tables use it.
type measurement struct {
	System, Op, Protocol string
	Conc, Rep            int
	TargetID             string
	toolResult
	Throughput float64 // OK requests per second of the tool's elapsed time
	CPUSeconds float64 // the three server processes together, over the run
	CPUPer1kOK float64 // CPUSeconds per 1,000 OK requests; NaN without OK requests
	ToolCPU    float64 // the load tool's own CPU seconds
	RevDelta   uint64  // rise in the target's revision (writes)
	NewKeys    uint64  // keys the run created, where the system can count them (etcd)
	Note       string
}

// runOne runs the tool for s and measures the servers around it.
func runOne(ctx context.Context, cfg Config, sys system, s runSpec, ticksPerSec float64) (measurement, error) {
	m := measurement{System: s.System, Op: s.Op, Protocol: s.Protocol, Conc: s.Conc, Rep: s.Rep, TargetID: s.Target.ID}
	var rev0, keys0 uint64
	counter, countsKeys := sys.(keyCounter)
	if s.Op == "write" {
		var err error
		if rev0, err = sys.Revision(ctx, s.Target); err != nil {
			return m, fmt.Errorf("%s revision: %w", s.System, err)
		}
		if countsKeys {
			if keys0, err = counter.WrittenKeys(ctx, s.Target); err != nil {
				return m, fmt.Errorf("%s keys: %w", s.System, err)
			}
		}
	}
	bin, args := toolCommand(cfg, s)
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t0, err := procstat.SumTicks(sys.PIDs())
	if err != nil {
		return m, fmt.Errorf("%s cpu: %w", s.System, err)
	}
	runErr := cmd.Run()
	t1, err := procstat.SumTicks(sys.PIDs())
	if err != nil {
		return m, fmt.Errorf("%s cpu (a node died?): %w", s.System, err)
	}
	if ctx.Err() != nil {
		return m, ctx.Err()
	}
	if cmd.ProcessState != nil {
		m.ToolCPU = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	}
	m.CPUSeconds = float64(t1-t0) / ticksPerSec

	var raw []byte
	if s.Protocol == "grpc" {
		raw, _ = os.ReadFile(s.RawFile)
	} else {
		raw = stdout.Bytes()
		if err := os.WriteFile(s.RawFile, raw, 0o644); err != nil {
			return m, err
		}
	}
	if stderr.Len() > 0 {
		os.WriteFile(s.RawFile+".stderr", stderr.Bytes(), 0o644)
	}
	if runErr != nil {
		return m, fmt.Errorf("%s %s: %w: %s", filepath.Base(bin), strings.Join(args, " "), runErr, tailString(stderr.String()+stdout.String(), 1500))
	}
	if s.Protocol == "grpc" {
		m.toolResult, err = parseGhz(raw, s.Conc)
		// ghz's report lists every call (up to a million): tens of MB a run.
		if slim, slimErr := withoutGhzDetails(raw); err == nil && slimErr == nil {
			os.WriteFile(s.RawFile, slim, 0o644)
		}
	} else {
		m.toolResult, err = parseWrk(string(raw))
	}
	if err != nil {
		return m, fmt.Errorf("%s: %w", s.RawFile, err)
	}
	if m.Elapsed > 0 {
		m.Throughput = float64(m.OK) / m.Elapsed.Seconds()
	}
	m.CPUPer1kOK = nan()
	if m.OK > 0 {
		m.CPUPer1kOK = m.CPUSeconds / (float64(m.OK) / 1000)
	}
	if s.Op == "write" {
		rev1, err := sys.Revision(ctx, s.Target)
		if err != nil {
			return m, fmt.Errorf("%s revision: %w", s.System, err)
		}
		m.RevDelta = rev1 - rev0
		// Every acknowledged write went through the log; fewer means some
		// were acknowledged without it.
		if m.RevDelta < m.OK {
			m.Note = fmt.Sprintf("revision rose %d for %d ok writes", m.RevDelta, m.OK)
		}
		if countsKeys {
			keys1, err := counter.WrittenKeys(ctx, s.Target)
			if err != nil {
				return m, fmt.Errorf("%s keys: %w", s.System, err)
			}
			// A key written twice is an overwrite, not a new write.
			if m.NewKeys = keys1 - keys0; m.NewKeys < m.OK {
				m.Note = strings.TrimPrefix(m.Note+fmt.Sprintf("; %d new keys for %d ok writes", m.NewKeys, m.OK), "; ")
			}
		}
	}
	if n := toolSaturated(cfg, s, m); n != "" {
		m.Note = strings.TrimPrefix(m.Note+"; "+n, "; ")
	}
	if after, err := sys.Target(ctx, cfg.Target == "follower"); err == nil && after.ID != s.Target.ID {
		m.Note = strings.TrimPrefix(m.Note+"; target changed to "+after.ID+" during the run", "; ")
	}
	return m, nil
}

// toolSaturated says when the load tool used 90% or more of the CPU it can
// use (wrk: one core per thread; ghz: every core): then the tool, not the
// server, may have set the pace, pulling the ratio towards 1.
func toolSaturated(cfg Config, s runSpec, m measurement) string {
	cores := float64(runtime.NumCPU())
	if s.Protocol == "rest" {
		cores = float64(cfg.wrkThreads(s.Conc))
	}
	if m.Elapsed <= 0 || m.ToolCPU < 0.9*cores*m.Elapsed.Seconds() {
		return ""
	}
	return fmt.Sprintf("load tool used %.1f of %.0f cores: it may be the bottleneck", m.ToolCPU/m.Elapsed.Seconds(), cores)
}

func tailString(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

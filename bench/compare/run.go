package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/lmc-consent/consentd/bench/internal/procstat"
)

// run starts both clusters, runs every (op, protocol, concurrency) A B A B,
// prints the table and writes the result files. It stops the clusters
// however it ends.
func run(ctx context.Context, cfg Config, stdout io.Writer) (err error) {
	log := cfg.Logger
	started := time.Now().UTC()
	if cfg.OutDir == "" {
		cfg.OutDir = filepath.Join("bench", "results", started.Format("20060102T150405Z"))
	}
	for _, d := range []string{"raw", "workloads", "logs"} {
		if err := os.MkdirAll(filepath.Join(cfg.OutDir, d), 0o755); err != nil {
			return err
		}
	}
	work, err := os.MkdirTemp(cfg.WorkDir, "consentd-bench-")
	if err != nil {
		return err
	}
	nonce := newNonce()
	var ports portPicker
	cons, err := newConsentdCluster(cfg, filepath.Join(work, "consentd"), &ports, nonce)
	if err != nil {
		return err
	}
	etcd, err := newEtcdCluster(cfg, filepath.Join(work, "etcd"), &ports, nonce)
	if err != nil {
		return err
	}
	systems := []system{cons, etcd}
	defer func() {
		log.Info("stopping clusters")
		cons.Stop()
		etcd.Stop()
		for _, p := range append(cons.logs(), etcd.logs()...) {
			copyFile(p, filepath.Join(cfg.OutDir, "logs", filepath.Base(filepath.Dir(p))+"-"+filepath.Base(p)))
		}
		if cfg.Keep {
			log.Info("kept data directories", "dir", work)
		} else if rmErr := os.RemoveAll(work); rmErr != nil && err == nil {
			err = rmErr
		}
	}()
	for _, sys := range systems {
		if err := os.MkdirAll(filepath.Join(work, sys.Name()), 0o755); err != nil {
			return err
		}
		log.Info("starting cluster", "system", sys.Name())
		if err := sys.Start(ctx); err != nil {
			return fmt.Errorf("start %s: %w", sys.Name(), err)
		}
	}
	if slices.Contains(cfg.Ops, "read") || slices.Contains(cfg.Ops, "stale") {
		for _, sys := range systems {
			log.Info("preloading read keys", "system", sys.Name(), "keys", cfg.Preload)
			if err := sys.Preload(ctx); err != nil {
				return fmt.Errorf("preload %s: %w", sys.Name(), err)
			}
		}
	}
	log.Info("measuring", "runs", cfg.runs(), "estimated", cfg.estimate().Round(time.Second))
	meta := describeMachine(cfg, started)
	if err := os.WriteFile(filepath.Join(cfg.OutDir, "meta.txt"), []byte(meta), 0o644); err != nil {
		return err
	}

	ticks := procstat.ClockTicks()
	var ms []measurement
	total := len(cfg.Ops) * len(cfg.Protocols) * len(cfg.Conc) * cfg.Reps * len(systems)
	for _, op := range cfg.Ops {
		for _, proto := range cfg.Protocols {
			works := map[string]runSpec{}
			for _, sys := range systems {
				w, err := sys.Workload(op, proto)
				if err != nil {
					return err
				}
				s := runSpec{System: sys.Name(), Op: op, Protocol: proto, Work: w}
				s.WorkFile, err = writeWorkload(cfg.OutDir, s)
				if err != nil {
					return err
				}
				works[sys.Name()] = s
			}
			for _, conc := range cfg.Conc {
				for rep := 0; rep <= cfg.Reps; rep++ {
					if rep == 0 && cfg.Warmup == 0 {
						continue
					}
					for _, sys := range systems {
						s := works[sys.Name()]
						s.Conc, s.Rep = conc, rep
						s.Target, err = sys.Target(ctx, cfg.Target == "follower")
						if err != nil {
							return err
						}
						name := fmt.Sprintf("%s-%s-c%d-%s-r%d", op, proto, conc, sys.Name(), rep)
						s.RawFile = filepath.Join(cfg.OutDir, "raw", name+map[string]string{"grpc": ".json", "rest": ".txt"}[proto])
						s.RunID = fmt.Sprintf("c%d-r%d", conc, rep)
						m, err := runOne(ctx, cfg, sys, s, ticks)
						if err != nil {
							return err
						}
						if rep == 0 {
							log.Debug("warm-up", "run", name, "ok", m.OK, "errors", m.Errors)
							continue
						}
						ms = append(ms, m)
						log.Info("run", "n", fmt.Sprintf("%d/%d", len(ms), total), "system", sys.Name(), "op", op, "protocol", proto,
							"conc", conc, "rep", rep, "target", s.Target.ID, "ok/s", fmtNum(m.Throughput, 0),
							"p50ms", fmtNum(m.P50.Seconds()*1000, 2), "p99ms", fmtNum(m.P99.Seconds()*1000, 2),
							"cpu/1k", fmtNum(m.CPUPer1kOK, 3), "errors", m.Errors, "note", m.Note)
					}
				}
			}
		}
	}

	rows := summarize(ms, cfg.Ops, cfg.Protocols, cfg.Conc)
	targets := evaluateTargets(rows, issueTargets)
	title := fmt.Sprintf("consentd vs etcd, 3 nodes each on 127.0.0.1, load on the %s; %v runs, %d reps alternating consentd etcd, medians (errors: total over reps); ratio = consentd/etcd",
		cfg.Target, cfg.Duration, cfg.Reps)
	var text bytes.Buffer
	if err := writeText(&text, title, rows, targets); err != nil {
		return err
	}
	text.WriteString("\nTargets (consentd/etcd):\n")
	for _, t := range targets {
		text.WriteString("  " + t.String() + "\n")
	}
	text.WriteString(targetTally(targets) + "\n")
	fmt.Fprintf(&text, "\nResults in %s\n", cfg.OutDir)
	if _, err := stdout.Write(text.Bytes()); err != nil {
		return err
	}

	var md bytes.Buffer
	writeMarkdown(&md, "### "+title, rows, targets)
	md.WriteString("\n```\n" + meta + "```\n")
	var csvBuf, runsBuf bytes.Buffer
	if err := writeCSV(&csvBuf, rows, targets); err != nil {
		return err
	}
	if err := writeRunsCSV(&runsBuf, ms); err != nil {
		return err
	}
	return errors.Join(
		os.WriteFile(filepath.Join(cfg.OutDir, "results.md"), md.Bytes(), 0o644),
		os.WriteFile(filepath.Join(cfg.OutDir, "results.csv"), csvBuf.Bytes(), 0o644),
		os.WriteFile(filepath.Join(cfg.OutDir, "runs.csv"), runsBuf.Bytes(), 0o644),
		os.WriteFile(filepath.Join(cfg.OutDir, "results.txt"), text.Bytes(), 0o644))
}

// writeWorkload saves what a tool will send: ghz's data file or wrk's script.
func writeWorkload(dir string, s runSpec) (string, error) {
	name := fmt.Sprintf("%s-%s-%s", s.Op, s.Protocol, s.System)
	path, content := filepath.Join(dir, "workloads", name+".json"), s.Work.Data
	if s.Protocol == "rest" {
		path, content = filepath.Join(dir, "workloads", name+".lua"), s.Work.Lua
	}
	return absPath(path), os.WriteFile(path, []byte(content), 0o644)
}

func newNonce() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// describeMachine is the run's context: when, where, which versions, how.
func describeMachine(cfg Config, started time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "date: %s\n", started.Format(time.RFC3339))
	fmt.Fprintf(&b, "command: %s\n", strings.Join(os.Args, " "))
	fmt.Fprintf(&b, "cpus: %d (%s)\n", runtime.NumCPU(), cpuModel())
	if out, err := exec.Command("uname", "-sr").Output(); err == nil {
		fmt.Fprintf(&b, "kernel: %s", out)
	}
	for _, v := range [][]string{{cfg.ConsentdBin, "version"}, {cfg.EtcdBin, "--version"}, {cfg.WrkBin, "-v"}} {
		out, _ := exec.Command(v[0], v[1:]...).CombinedOutput()
		first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		fmt.Fprintf(&b, "%s: %s\n", filepath.Base(v[0]), first)
	}
	// go install leaves ghz --version at "dev"; its module version is in the binary.
	ghzVersion := "unknown"
	if out, err := exec.Command("go", "version", "-m", cfg.GhzBin).Output(); err == nil {
		for line := range strings.Lines(string(out)) {
			if f := strings.Fields(line); len(f) >= 3 && f[0] == "mod" && f[1] == "github.com/bojand/ghz" {
				ghzVersion = f[2]
			}
		}
	}
	fmt.Fprintf(&b, "ghz: %s\n", ghzVersion)
	fmt.Fprintf(&b, "duration %v, warm-up %v, reps %d, conc %s, ghz connections min(conc,%d), wrk threads min(conc,%d), timeout %v\n",
		cfg.Duration, cfg.Warmup, cfg.Reps, joinInts(cfg.Conc), cfg.MaxConns, cfg.WrkThreads, cfg.Timeout)
	fmt.Fprintf(&b, "consentd: --insecure, default durability, access log on; etcd: defaults (fsync on); read pool %d keys, write pool %d patients, etcd value %d bytes\n",
		cfg.Preload, cfg.WritePool, cfg.ValueSize)
	return b.String()
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}

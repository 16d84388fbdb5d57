package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestScenarioList(t *testing.T) {
	got, err := scenarioList("ci")
	if err != nil || len(got) != 4 {
		t.Fatalf("ci: %v %v", got, err)
	}
	if got, err := scenarioList("pause-leader, loss"); err != nil || strings.Join(got, ",") != "pause-leader,loss" {
		t.Fatalf("list: %v %v", got, err)
	}
	if _, err := scenarioList("pause-leader,nope"); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("unknown scenario accepted: %v", err)
	}
}

func TestCheckNeedsAReport(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-check", t.TempDir()}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "no report") {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
}

func TestCheckReportsABrokenReport(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pause-leader-1")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "run.json"), []byte(`{"scenario":"pause-leader"}`), 0o644)
	var stdout, stderr bytes.Buffer
	code := run([]string{"-check", filepath.Dir(dir)}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stdout.String(), "ERROR") || !strings.HasSuffix(stdout.String(), "0 passed, 1 failed\n") {
		t.Fatalf("exit %d, stdout %q", code, stdout.String())
	}
}

func TestReportName(t *testing.T) {
	if got := reportName("mixed", 4, false); got != "mixed-4" {
		t.Fatal(got)
	}
	if got := reportName("partition-leader-bridge", 4, true); got != "partition-leader-bridge-tls-4" {
		t.Fatal(got)
	}
}

func TestHelpDescribesEveryScenario(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-h"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"targeted-leader-change", "traps for reads in a leader change", "pause-leader", "consentd_broken", "NoBarrier"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("-h does not mention %q:\n%s", want, stderr.String())
		}
	}
}

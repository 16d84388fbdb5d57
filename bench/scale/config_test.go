package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestConfigValidateNamesTheFlag(t *testing.T) {
	ok := Config{Consentd: os.Args[0], Patients: 1000, Conc: 8, Batch: 500, Idle: time.Second,
		Checks: 10, CheckSize: 100, PortBase: 27000}
	if err := ok.Validate(); err != nil {
		t.Fatalf("a good config: %v", err)
	}
	for _, tc := range []struct {
		flag string
		mod  func(*Config)
	}{
		{"-consentd", func(c *Config) { c.Consentd = "" }},
		{"-patients", func(c *Config) { c.Patients = 0 }},
		{"-batch", func(c *Config) { c.Batch = 1001 }},
		{"-check-size", func(c *Config) { c.CheckSize = 1001 }},
		{"-checks-only", func(c *Config) { c.ChecksOnly = true }},
		{"-wipe-only", func(c *Config) { c.WipeOnly = true }},
		{"-drop-caches", func(c *Config) { c.DropCaches = true }},
		{"-port-base", func(c *Config) { c.PortBase = 80 }},
		{"-wait-snapshot", func(c *Config) { c.WaitSnapshot = -time.Second }},
	} {
		c := ok
		tc.mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("%s: err = %v, want one naming %s", tc.flag, err, tc.flag)
		}
	}
}

func TestParseRaftStats(t *testing.T) {
	both := "consentd_raft{stat=\"last_snapshot_index\"} 1.300751e+06\nconsentd_raft{stat=\"log_bytes_since_snapshot\"} 4.2e+07\n" +
		"consentd_raft{stat=\"snapshots_being_written\"} 1\n"
	for _, tc := range []struct {
		name, text string
		want       raftStats
		ok         bool
	}{
		{"exponent forms", "# HELP consentd_raft x\nconsentd_raft{stat=\"commit_index\"} 5\n" + both, raftStats{1300751, 42000000, 1}, true},
		{"small figures", "consentd_raft{stat=\"log_bytes_since_snapshot\"} 0\nconsentd_raft{stat=\"snapshots_being_written\"} 0\n" +
			"consentd_raft{stat=\"last_snapshot_index\"} 42\n", raftStats{42, 0, 0}, true},
		{"one missing (a build without the byte count)", "consentd_raft{stat=\"last_snapshot_index\"} 42\n", raftStats{LastSnapshot: 42}, false},
		{"not a number", "consentd_raft{stat=\"last_snapshot_index\"} many\n", raftStats{}, false},
	} {
		got, err := parseRaftStats(strings.NewReader(tc.text))
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("%s: %+v, %v; want %+v, ok %v", tc.name, got, err, tc.want, tc.ok)
		}
	}
}

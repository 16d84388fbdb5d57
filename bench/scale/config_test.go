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
	} {
		c := ok
		tc.mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("%s: err = %v, want one naming %s", tc.flag, err, tc.flag)
		}
	}
}

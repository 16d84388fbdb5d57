package main

import (
	"testing"

	"github.com/lmc-consent/consentd/fsm"
)

// Every number the benchmark loads must pass the register's own check, or
// the load would measure refusals.
func TestPatientsAreValidAndDistinct(t *testing.T) {
	got := patients(5000)
	seen := map[string]bool{}
	for _, n := range got {
		if err := fsm.ValidateNHSNumber(n); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		if seen[n] {
			t.Fatalf("%s twice", n)
		}
		seen[n] = true
	}
	if len(got) != 5000 {
		t.Fatalf("%d numbers, want 5000", len(got))
	}
}

package main

import (
	"testing"
	"time"

	"github.com/lmc-consent/consentd/fsm"
)

// The plan is the register the issue describes: about 1.3 decisions per
// patient, about 5% of them dissent, second decisions after first ones,
// all in the past, every request valid.
func TestPlanIsRealistic(t *testing.T) {
	const n = 20000
	nhs := patients(n)
	var decisions, dissents int
	for p := range n {
		for pass := range 2 {
			if pass == 1 && !hasSecond(p) {
				continue
			}
			d := plan(p, pass)
			decisions++
			if d.state == "dissent" {
				dissents++
			}
			if d.at.After(time.Now()) {
				t.Fatalf("patient %d pass %d in the future: %v", p, pass, d.at)
			}
			if pass == 1 && !d.at.After(plan(p, 0).at) {
				t.Fatalf("patient %d: second decision not after the first", p)
			}
			if err := fsm.ValidateNHSNumber(d.request(nhs).GetNhsNumber()); err != nil {
				t.Fatal(err)
			}
		}
	}
	per := float64(decisions) / n
	dissent := float64(dissents) / float64(decisions)
	if per < 1.27 || per > 1.33 || dissent < 0.04 || dissent > 0.06 {
		t.Fatalf("%.3f decisions per patient, %.3f dissent; want about 1.3 and 0.05", per, dissent)
	}
}

// expectedSCR follows the latest SCR decision: the checker that compares
// check answers with the load depends on it.
func TestExpectedSCR(t *testing.T) {
	changed := 0
	for p := range 5000 {
		want := plan(p, 0).state
		if hasSecond(p) && plan(p, 1).kind == "scr" {
			want = plan(p, 1).state
			if want != plan(p, 0).state {
				changed++
			}
		}
		if got := expectedSCR(p); got != want {
			t.Fatalf("patient %d: %q, want %q", p, got, want)
		}
	}
	if changed == 0 {
		t.Fatal("no patient changed their SCR decision: the check would not notice a lost second decision")
	}
}

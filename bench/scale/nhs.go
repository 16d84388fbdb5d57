package main

import "github.com/lmc-consent/consentd/fsm"

// scaleBase is where the benchmark's NHS numbers start: a block patients in
// England are not issued numbers from. The 999 test block alone holds fewer
// than ten million valid numbers, so the benchmark uses 900… upward.
const scaleBase = 900_000_000

// patients returns the first n benchmark NHS numbers, in order.
func patients(n int) []string { return fsm.NHSNumbersFrom(scaleBase, n) }

package main

import (
	"strconv"

	"github.com/lmc-consent/consentd/fsm"
)

// scaleBase is where the benchmark's NHS numbers start: a block patients in
// England are not issued numbers from. The 999 test block alone holds fewer
// than ten million valid numbers, so the benchmark uses 900… upward.
const scaleBase = 900_000_000

// nhsNumber returns the NHS number whose first nine digits are
// scaleBase+i, with its Modulus 11 check digit, or "" when that prefix has
// no valid check digit (one prefix in eleven).
func nhsNumber(i int) string {
	nine := strconv.Itoa(scaleBase + i)
	if len(nine) != 9 {
		return ""
	}
	check, ok := fsm.NHSCheckDigit(nine)
	if !ok {
		return ""
	}
	return nine + string(check)
}

// patients returns the first n benchmark NHS numbers, in order.
func patients(n int) []string {
	out := make([]string, 0, n)
	for i := 0; len(out) < n; i++ {
		if s := nhsNumber(i); s != "" {
			out = append(out, s)
		}
	}
	return out
}

package main

import "strconv"

// scaleBase is where the benchmark's NHS numbers start: a block patients in
// England are not issued numbers from. The 999 test block alone holds fewer
// than ten million valid numbers, so the benchmark uses 900… upward.
const scaleBase = 900_000_000

// nhsNumber returns the NHS number whose first nine digits are
// scaleBase+i, with its Modulus 11 check digit, or "" when that prefix has
// no valid check digit (one prefix in eleven).
func nhsNumber(i int) string {
	prefix := scaleBase + i
	digits := strconv.Itoa(prefix)
	if len(digits) != 9 {
		return ""
	}
	sum := 0
	for k := 0; k < 9; k++ {
		sum += int(digits[k]-'0') * (10 - k)
	}
	check := 11 - sum%11
	if check == 11 {
		check = 0
	}
	if check == 10 {
		return ""
	}
	return digits + strconv.Itoa(check)
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

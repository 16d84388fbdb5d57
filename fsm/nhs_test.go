package fsm

import (
	"errors"
	"strings"
	"testing"
)

// referenceCheck is an independent statement of the Modulus 11 rule.
func referenceCheck(s string) bool {
	if len(s) != 10 {
		return false
	}
	digits := make([]int, 10)
	allSame := true
	for i, r := range s {
		if r < '0' || r > '9' {
			return false
		}
		digits[i] = int(r - '0')
		allSame = allSame && s[i] == s[0]
	}
	if allSame {
		return false
	}
	total := 0
	for i, w := 0, 10; i < 9; i, w = i+1, w-1 {
		total += digits[i] * w
	}
	check := (11 - total%11) % 11
	return check != 10 && check == digits[9]
}

func TestValidateNHSNumber(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"9990000018", true},
		{"9000000009", true},
		{"9434765919", true},
		{"9434765918", false}, // wrong check digit
		{"999000001", false},  // nine digits
		{"99900000188", false},
		{"999000001X", false},
		{" 999000001", false},
		{"0000000000", false}, // all the same passes the sum
		{"4444444444", false},
		{"", false},
	} {
		err := ValidateNHSNumber(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("%q: err %v, want ok=%v", tc.in, err, tc.ok)
		}
		var fe *FieldError
		if err != nil && (!errors.As(err, &fe) || fe.Field != "nhs_number" || !errors.Is(err, ErrInvalidArgument)) {
			t.Errorf("%q: error %v does not name nhs_number", tc.in, err)
		}
	}
}

func FuzzValidateNHSNumber(f *testing.F) {
	for _, s := range []string{"9990000018", "9000000009", "0000000000", "12345", "999000001X"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := ValidateNHSNumber(s)
		got := err == nil
		if got && (len(s) != 10 || strings.Trim(s, "0123456789") != "") {
			t.Fatalf("%q accepted but is not 10 digits", s)
		}
		var fe *FieldError
		if err != nil && (!errors.As(err, &fe) || fe.Field != "nhs_number") {
			t.Fatalf("%q: error %v does not name nhs_number", s, err)
		}
		if got != referenceCheck(s) {
			t.Fatalf("%q: ValidateNHSNumber says %v, the reference %v", s, got, !got)
		}
	})
}

func TestTestNHSNumbersAreValidDistinctAndInTheTestRange(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 2000; i++ {
		n := TestNHSNumber(i)
		if !referenceCheck(n) || n[:3] != "999" || seen[n] {
			t.Fatalf("TestNHSNumber(%d) = %s", i, n)
		}
		seen[n] = true
	}
}

func TestNHSNumbersFrom(t *testing.T) {
	got := NHSNumbersFrom(900_000_000, 2000)
	if len(got) != 2000 {
		t.Fatalf("%d numbers, want 2000", len(got))
	}
	for i, n := range got {
		if !referenceCheck(n) || n < "9000000000" || i > 0 && n <= got[i-1] {
			t.Fatalf("number %d: %s (previous %s)", i, n, got[max(i-1, 0)])
		}
	}
	// Nine digits run out: what is left is returned, never a ten-digit prefix.
	end := NHSNumbersFrom(999_999_990, 20)
	if len(end) == 0 || len(end) >= 10 {
		t.Fatalf("%d numbers from the last ten prefixes", len(end))
	}
	for _, n := range end {
		if len(n) != 10 || !referenceCheck(n) {
			t.Fatalf("near the end: %s", n)
		}
	}
}

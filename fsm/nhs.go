package fsm

import "strconv"

// ValidateNHSNumber checks a 10-digit NHS number: digits only, the Modulus 11
// check digit (weights 10..2; 11 becomes 0; 10 is never issued), and not all
// ten digits the same. The field name in the error is nhs_number.
func ValidateNHSNumber(s string) error {
	if len(s) != 10 {
		return fieldErr("nhs_number", "must be exactly 10 digits, got %d characters", len(s))
	}
	same := true
	for i := 0; i < 10; i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return fieldErr("nhs_number", "must be digits only")
		}
		if c != s[0] {
			same = false
		}
	}
	if same {
		return fieldErr("nhs_number", "ten identical digits are not a valid NHS number")
	}
	if check, ok := NHSCheckDigit(s[:9]); !ok || check != s[9] {
		return fieldErr("nhs_number", "check digit is wrong")
	}
	return nil
}

// NHSCheckDigit returns the Modulus 11 check digit ('0'..'9') of the first
// nine digits of an NHS number (weights 10..2; 11 becomes 0), or false when
// they have none: a remainder giving 10 is never issued. nine must be nine
// ASCII digits.
func NHSCheckDigit(nine string) (byte, bool) {
	sum := 0
	for i := 0; i < 9; i++ {
		sum += int(nine[i]-'0') * (10 - i)
	}
	check := 11 - sum%11
	if check == 11 {
		check = 0
	}
	if check == 10 {
		return 0, false
	}
	return byte('0' + check), true
}

// TestNHSNumber returns the i-th valid number of the 999 range that the NHS
// sets aside for test data (i ≥ 0; numbers grow with i). For tests,
// benchmarks and demos: never a real patient.
func TestNHSNumber(i int) string {
	for base := 999000000 + i*11; ; base++ {
		nine := strconv.Itoa(base)
		check, ok := NHSCheckDigit(nine)
		if !ok {
			continue
		}
		if n := nine + string(check); ValidateNHSNumber(n) == nil {
			return n
		}
	}
}

// NHSNumbersFrom returns up to n numbers in order that ValidateNHSNumber
// accepts, whose first nine digits are first or above (first ≥ 100 000 000),
// fewer if nine digits run out. For benchmarks that need more numbers than
// the 999 test range holds (bench/scale loads from 900 000 000, a block
// patients in England are not issued numbers from): never for real patients.
func NHSNumbersFrom(first, n int) []string {
	out := make([]string, 0, n)
	for base := first; len(out) < n && base <= 999_999_999; base++ {
		nine := strconv.Itoa(base)
		check, ok := NHSCheckDigit(nine)
		if !ok {
			continue
		}
		if n := nine + string(check); ValidateNHSNumber(n) == nil {
			out = append(out, n)
		}
	}
	return out
}

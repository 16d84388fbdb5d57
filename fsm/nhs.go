package fsm

// ValidateNHSNumber checks a 10-digit NHS number: digits only, the Modulus 11
// check digit (weights 10..2; 11 becomes 0; 10 is never issued), and not all
// ten digits the same. The field name in the error is nhs_number.
func ValidateNHSNumber(s string) error {
	if len(s) != 10 {
		return fieldErr("nhs_number", "must be exactly 10 digits, got %d characters", len(s))
	}
	sum := 0
	same := true
	for i := 0; i < 10; i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return fieldErr("nhs_number", "must be digits only")
		}
		if c != s[0] {
			same = false
		}
		if i < 9 {
			sum += int(c-'0') * (10 - i)
		}
	}
	if same {
		return fieldErr("nhs_number", "ten identical digits are not a valid NHS number")
	}
	check := 11 - sum%11
	if check == 11 {
		check = 0
	}
	if check == 10 || check != int(s[9]-'0') {
		return fieldErr("nhs_number", "check digit is wrong")
	}
	return nil
}

// TestNHSNumber returns the i-th valid number of the 999 range that the NHS
// sets aside for test data (i ≥ 0; numbers grow with i). For tests,
// benchmarks and demos: never a real patient.
func TestNHSNumber(i int) string {
	for base := 999000000 + i*11; ; base++ {
		var b [10]byte
		n := base
		for k := 8; k >= 0; k-- {
			b[k] = byte('0' + n%10)
			n /= 10
		}
		sum := 0
		for k := 0; k < 9; k++ {
			sum += int(b[k]-'0') * (10 - k)
		}
		check := 11 - sum%11
		if check == 11 {
			check = 0
		}
		if check == 10 {
			continue
		}
		b[9] = byte('0' + check)
		if ValidateNHSNumber(string(b[:])) == nil {
			return string(b[:])
		}
	}
}

//go:build !linux

package fsm

// Without madvise and mincore at hand every page counts as resident, so
// nothing is advised and checks look up as they would have.

func willNeed([]byte) error { return nil }

func notResident([]byte) (bool, error) { return false, nil }

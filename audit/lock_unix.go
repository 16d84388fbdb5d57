//go:build unix

package audit

import (
	"fmt"
	"os"
	"syscall"
)

// lockDir takes an exclusive, non-blocking flock on the lock file in dir.
func lockDir(dir string) (unlock func() error, err error) {
	f, err := os.OpenFile(segmentPath(dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("audit: %s is in use by another access log: %w", dir, err)
	}
	return f.Close, nil // closing the descriptor releases the lock
}

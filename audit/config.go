package audit

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Config configures one node's access log. Zero fields take the defaults of
// DefaultConfig when passed through WithDefaults (Open does this).
type Config struct {
	// Dir holds the log files and is created (0700) if missing. Required.
	Dir string
	// Node is this node's id, stamped on every entry. Required.
	Node string
	// MaxFileBytes is the size past which the next line goes to a new file.
	// A single line larger than this still gets a file of its own.
	MaxFileBytes int64 // default 64 MiB; at least 1 KiB
	// MaxFiles is how many rotated (no longer written) files to keep beside
	// the active one; older ones are removed. 0 keeps all: patient-access logs
	// are usually retained for years and archived by the operator.
	MaxFiles int // default 0
	// FailOpen, when true, makes Append log and count (Dropped) an entry it
	// could not make durable and return nil, so the access goes ahead
	// unrecorded. The default, false, fails closed as Vault's audit devices
	// do: Append returns an error wrapping ErrUnavailable and the caller must
	// refuse the request.
	FailOpen bool
	Logger   *slog.Logger // default discards
	// Now stamps entries whose Time is zero; tests replace it.
	Now func() time.Time // default time.Now
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		MaxFileBytes: 64 << 20,
		MaxFiles:     0,
		FailOpen:     false,
		Logger:       slog.New(slog.DiscardHandler),
		Now:          time.Now,
	}
}

// minFileBytes keeps a misconfiguration from creating a file per entry.
const minFileBytes = 1 << 10

// WithDefaults fills every zero field from DefaultConfig.
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	if c.MaxFileBytes == 0 {
		c.MaxFileBytes = d.MaxFileBytes
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	if c.Now == nil {
		c.Now = d.Now
	}
	return c
}

// Validate reports every missing or out-of-range setting, naming the field.
func (c Config) Validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("audit: Dir is required"))
	}
	if c.Node == "" {
		errs = append(errs, errors.New("audit: Node is required"))
	}
	if c.MaxFileBytes < minFileBytes {
		errs = append(errs, fmt.Errorf("audit: MaxFileBytes must be at least %d, got %d", minFileBytes, c.MaxFileBytes))
	}
	if c.MaxFiles < 0 {
		errs = append(errs, fmt.Errorf("audit: MaxFiles must not be negative, got %d", c.MaxFiles))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("audit: Logger is required (WithDefaults sets one)"))
	}
	if c.Now == nil {
		errs = append(errs, errors.New("audit: Now is required (WithDefaults sets one)"))
	}
	return errors.Join(errs...)
}

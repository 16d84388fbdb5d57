//go:build consentd_broken

// Package broken owns the deliberately broken variants of consentd that test
// the tester: built with the consentd_broken tag, a node misbehaves in the
// one way named by the CONSENTD_BROKEN environment variable, so that the
// Jepsen suite (cluster/jepsen) can prove it catches each bug. Without the
// tag On is constant false and every broken path compiles away.
package broken

import (
	"fmt"
	"os"
	"strings"
)

// active is read once at start: a node's variant never changes while it runs.
var active = func() Variant {
	v := Variant(strings.TrimSpace(os.Getenv(EnvVar)))
	if v == "" {
		return ""
	}
	for _, known := range Variants() {
		if v == known {
			fmt.Fprintf(os.Stderr, "consentd: DELIBERATELY BROKEN BUILD: variant %s is on\n", v)
			return v
		}
	}
	fmt.Fprintf(os.Stderr, "consentd: %s=%q names no variant (have %v)\n", EnvVar, v, Variants())
	os.Exit(2)
	return ""
}()

// On reports whether variant v is switched on in this process.
func On(v Variant) bool { return v == active }

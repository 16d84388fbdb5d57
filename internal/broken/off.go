//go:build !consentd_broken

// Package broken owns the deliberately broken variants of consentd that test
// the tester: built with the consentd_broken tag, a node misbehaves in the
// one way named by the CONSENTD_BROKEN environment variable, so that the
// Jepsen suite (cluster/jepsen) can prove it catches each bug. Without the
// tag On is constant false and every broken path compiles away.
package broken

// On reports whether variant v is switched on. In a production build it is
// always false.
func On(v Variant) bool { return false }

// Package archtest holds tests that keep the repository's layout honest; it
// has no code of its own.
package archtest

// Package commandv1 holds the replicated log entries and stored records of the
// register (generated). Field numbers are never reused.
package commandv1

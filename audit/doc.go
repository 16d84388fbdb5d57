// Package audit owns the per-node access log: one JSON line for every read and
// write of a patient's consent (who, which organisation and role, which NHS
// numbers, what operation, when, allowed or denied, on which node), appended
// to local files that are fsynced before the access is answered, rotated by
// size, and read back by auditors through Query.
//
// It is modelled on Vault's file audit device: by default the log fails
// closed, so a request whose access cannot be recorded is refused (Append
// returns an error wrapping ErrUnavailable); Config.FailOpen trades that for
// availability and counts what was dropped.
//
// # Files
//
// Dir holds access-<seq>.jsonl files, where <seq> is the zero-padded sequence
// number of the first entry the file was created for, so names sort in log
// order. Only the newest file is written; it is opened O_APPEND|O_CREATE with
// mode 0600, and Dir is fsynced after a file is created. A file is rotated
// when the next line would take it past Config.MaxFileBytes. Each line is
//
//	{"v":1,"seq":42,"time":"2026-01-02T03:04:05.123456789Z","node":"lmc-a",...}
//
// where seq rises by one per entry on this node, across rotations and
// restarts. Seq numbers are never reused for entries that may be on disk: a
// batch whose write fails has consumed its numbers, so a gap in seq is the
// mark of entries that were refused (fail-closed) or dropped (fail-open), or
// of unacknowledged entries lost in a crash.
//
// # Never rewriting a byte
//
// The package only creates files and appends to them; it never truncates or
// rewrites what it wrote, so Dir can carry the append-only attribute (chattr
// +a) and a forensic copy stays a prefix of the live file. The exceptions
// are retention (Config.MaxFiles), which removes whole old files, and a file
// that was created for a batch whose write failed before any line in it was
// durable, which holds no acknowledged entry and is removed.
//
// A torn last line (a crash in the middle of a write) is therefore not cut
// off: Open logs a warning and appends a newline, so the torn bytes become a
// line of their own that readers skip as undecodable, and new entries start on
// a fresh line. If the torn bytes were a whole entry missing only its newline,
// it becomes readable and counts for seq recovery. Complete entries are never
// dropped.
//
// Query reads only lines this process has fsynced (and, after a restart,
// whatever is on disk). A line whose write went through but whose fsync
// failed is not shown while the process runs, but may be on disk after a
// restart: its Append returned an error, so the access was refused (or, failing
// open, counted as dropped). The log errs on showing an attempt too many,
// never an acknowledged access too few.
//
// # Group commit
//
// A single writer goroutine owns the active file. Append encodes its entry,
// hands it to the writer and waits; the writer takes every entry queued at
// that moment, gives them consecutive seq numbers, writes them with one write
// and one fsync, and only then releases each Append. Concurrent Appends thus
// share an fsync, and an Append returns nil only once its own line is durable.
//
// The package keeps no state outside a *Log; NHS numbers are stored in full
// here (it is the one place they are), and entries carry no reasons, free text
// or request bodies.
package audit

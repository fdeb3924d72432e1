// Package quarantine keeps fanguard's record of detections and the vault of
// quarantined files: a SQLite log (WAL mode, every record committed durably
// before Add returns) shared by the daemon and the command line, a root-only
// vault holding file contents by sha256 in a transformed form that no
// scanner flags, the crash-safe move of a detected file into the vault, its
// restore and deletion, the allow list of sha256 sums, and retention.
//
// It must never scan files or decide verdicts (that is policy and scanner),
// and it must never leave a detected file both gone from its path and
// missing from the vault, whatever point a crash interrupts it at. Nothing
// here runs on the event path: the daemon answers the open first and calls
// this package afterwards. Nothing the opener controls may make it grow
// without bound or wait without end: records are bounded whatever they are
// given, the vault stays within its size limit on every move, and a move
// never waits on a filesystem that is not local.
package quarantine

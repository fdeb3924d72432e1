// Package fan is fanguard's interface to the kernel: the fanotify group that
// holds opens for a verdict, the event records it delivers, the marks that
// choose what it sees, and the few other system calls the event path needs
// (pread, readlink and stat on event fds, /proc lookups, the mount table).
//
// It is the only package that talks fanotify to the kernel. Keep it a thin,
// allocation-free layer: policy and decisions belong elsewhere. Nothing in
// here may open a file by path on a protected filesystem; the only paths it
// resolves are under /proc, which is never marked.
package fan

// Package fan is fanguard's interface to the kernel: the fanotify group that
// holds opens for a verdict, the event records it delivers, the marks that
// choose what it sees, and the few other system calls the event path needs
// (pread, readlink and stat on event fds, pidfds, /proc lookups, the mount
// table).
//
// It is the only package that talks fanotify to the kernel. Keep it a thin,
// allocation-free layer: policy and decisions belong elsewhere. Nothing in
// here may open a file by path on a protected filesystem: the only paths it
// opens are under /proc, which is never marked; the paths it only looks up
// (PathID, PathLeadsTo, mount points) it stats without opening, and never
// in a way that waits for a file server. Nothing in here may read what an
// opener can hold (/proc/<pid>/cmdline, environ, mem take its mmap_lock)
// except ProcCmdline, whose doc says where it may be called.
package fan

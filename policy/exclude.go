package policy

import "path/filepath"

// Exclusions answers, on the event path, whether an open is left unscanned
// because of [protect] exclude_paths or exclude_uids. Its methods allocate
// nothing. exclude_exe is matched by the file a program runs from, not by
// a name: that takes the kernel, and is the daemon's.
//
// An Exclusions is read-only after NewExclusions returns it, so it is safe
// for concurrent use. A nil *Exclusions excludes nothing.
type Exclusions struct {
	paths  map[string]struct{} // exclude_paths entries, other than "/"
	root   bool                // exclude_paths holds "/": every path matches
	minLen int                 // shortest entry in paths
	maxLen int                 // longest entry in paths
	uids   map[uint32]struct{}
}

// NewExclusions returns the exclusions of p. It uses ExcludePaths and
// ExcludeUIDs; paths are cleaned with filepath.Clean as
// Parse does, so a ProtectConfig from Parse is used as is.
func NewExclusions(p ProtectConfig) *Exclusions {
	e := &Exclusions{
		paths: make(map[string]struct{}, len(p.ExcludePaths)),
		uids:  make(map[uint32]struct{}, len(p.ExcludeUIDs)),
	}
	for _, s := range p.ExcludePaths {
		s = filepath.Clean(s)
		if s == "/" {
			e.root = true
			continue
		}
		if len(e.paths) == 0 || len(s) < e.minLen {
			e.minLen = len(s)
		}
		e.maxLen = max(e.maxLen, len(s))
		e.paths[s] = struct{}{}
	}
	for _, u := range p.ExcludeUIDs {
		e.uids[u] = struct{}{}
	}
	return e
}

// HasPaths reports whether any path is excluded, so that the caller can
// skip resolving the path of an event's file.
func (e *Exclusions) HasPaths() bool { return e != nil && (e.root || len(e.paths) > 0) }

// HasUIDs reports whether any uid is excluded, so that the caller can skip
// reading /proc/<pid>/status.
func (e *Exclusions) HasUIDs() bool { return e != nil && len(e.uids) > 0 }

// Path reports whether p, a clean absolute path as the kernel reports it
// (/proc/self/fd), equals an exclude_paths entry or lies below one. The
// entry "/var/lib/docker" matches "/var/lib/docker" and
// "/var/lib/docker/x" but not "/var/lib/dockerx"; the entry "/" matches
// every path. Entries are compared byte for byte: symbolic links in an
// entry are not resolved.
func (e *Exclusions) Path(p []byte) bool {
	if e == nil {
		return false
	}
	if e.root {
		return true
	}
	if len(e.paths) == 0 || len(p) < e.minLen {
		return false
	}
	// Look up p and each of its ancestors that could be an entry. The
	// string(...) conversions in map index expressions do not allocate.
	for i := e.minLen; i < len(p) && i <= e.maxLen; i++ {
		if p[i] == '/' {
			if _, ok := e.paths[string(p[:i])]; ok {
				return true
			}
		}
	}
	if len(p) <= e.maxLen {
		_, ok := e.paths[string(p)]
		return ok
	}
	return false
}

// UID reports whether uid is in exclude_uids.
func (e *Exclusions) UID(uid uint32) bool {
	if e == nil || len(e.uids) == 0 {
		return false
	}
	_, ok := e.uids[uid]
	return ok
}

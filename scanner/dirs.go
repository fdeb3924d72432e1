package scanner

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// entryKind is what a directory entry named like a rule file turned out to be.
type entryKind uint8

const (
	// kindRule is a regular, non-empty file (or a symbolic link to one).
	kindRule entryKind = iota
	// kindEmpty is an empty regular file: it masks the name.
	kindEmpty
	// kindNull is /dev/null (usually a symbolic link to it): it masks the name.
	kindNull
	// kindOther is anything else: a directory, a FIFO, a dangling link.
	kindOther
)

// entry is one directory entry of a rule directory listing.
type entry struct {
	Name string    // base name inside its directory
	Path string    // directory joined with Name
	Kind entryKind // what Path is
	Note string    // for kindOther: why it is not loadable
}

// merged is the outcome of merging the listings of the rule directories.
type merged struct {
	Files  []entry  // rule files to compile, in lexical order of Name
	Masked []string // names masked by an empty file or /dev/null, sorted
	Bad    []entry  // names whose effective entry is kindOther, sorted by Name
}

// isRuleFileName reports whether a directory entry name is one that Load
// considers: *.yar or *.yara, not hidden, a single path element.
func isRuleFileName(name string) bool {
	if name == "" || name[0] == '.' || strings.ContainsAny(name, "/\x00") {
		return false
	}
	return strings.HasSuffix(name, ".yar") || strings.HasSuffix(name, ".yara")
}

// merge decides which rule files load. listing holds the entries of all rule
// directories, those of earlier directories first; the last entry of a name
// wins (systemd drop-in semantics). Entries whose name is not a rule file
// name are ignored. merge is pure: it looks only at its argument.
func merge(listing []entry) merged {
	last := make(map[string]entry)
	for _, e := range listing {
		if isRuleFileName(e.Name) {
			last[e.Name] = e
		}
	}
	names := make([]string, 0, len(last))
	for name := range last {
		names = append(names, name)
	}
	slices.Sort(names)

	var m merged
	for _, name := range names {
		e := last[name]
		switch e.Kind {
		case kindRule:
			m.Files = append(m.Files, e)
		case kindEmpty, kindNull:
			m.Masked = append(m.Masked, name)
		default:
			m.Bad = append(m.Bad, e)
		}
	}
	return m
}

// listDirs lists the rule file candidates of dirs, in order. Directories that
// do not exist are skipped and returned in missing; any other failure to read
// a directory is an error, since loading without it could resurrect files it
// masks.
func listDirs(dirs []string) (listing []entry, missing []string, err error) {
	for _, dir := range dirs {
		des, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			missing = append(missing, dir)
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("reading rule directory %s: %w", dir, err)
		}
		for _, de := range des {
			if !isRuleFileName(de.Name()) {
				continue
			}
			p := filepath.Join(dir, de.Name())
			kind, note := classify(p)
			listing = append(listing, entry{Name: de.Name(), Path: p, Kind: kind, Note: note})
		}
	}
	return listing, missing, nil
}

// classify stats p, following symbolic links, and says what it is.
func classify(p string) (entryKind, string) {
	fi, err := os.Stat(p)
	if err != nil {
		if lfi, lerr := os.Lstat(p); lerr == nil && lfi.Mode()&fs.ModeSymlink != 0 {
			return kindOther, "dangling symbolic link: " + err.Error()
		}
		return kindOther, err.Error()
	}
	switch mode := fi.Mode(); {
	case mode.IsRegular() && fi.Size() == 0:
		return kindEmpty, ""
	case mode.IsRegular():
		return kindRule, ""
	case mode&fs.ModeCharDevice != 0 && isDevNull(fi):
		return kindNull, ""
	default:
		return kindOther, "not a regular file (" + mode.Type().String() + ")"
	}
}

// isDevNull reports whether fi is the null device (character device 1:3).
func isDevNull(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	rdev := uint64(st.Rdev)
	major := (rdev>>8)&0xfff | (rdev>>32)&^0xfff
	minor := rdev&0xff | (rdev>>12)&^0xff
	return major == 1 && minor == 3
}

// Override is an entry of a rule directory that the entry of the same name
// in a later directory replaced. It is a plain value, read-only within a
// Ruleset.
type Override struct {
	Name string // file name
	Path string // the entry replaced: a rule file, or a mask
	By   string // the entry in force: a rule file, or a mask
}

// Mask is the entry that masks a name: an empty file or a symbolic link to
// /dev/null. It is a plain value, read-only within a Ruleset.
type Mask struct {
	Name string // file name masked
	Path string // the mask
	Null bool   // Path is /dev/null (a symbolic link to it) rather than an empty file
}

// shadows lists, from the same listing as merge, the entries replaced by a
// later one of the same name (by name, then in directory order) and the
// masks in force (by name). It is pure, like merge.
func shadows(listing []entry) ([]Override, []Mask) {
	byName := make(map[string][]entry)
	for _, e := range listing {
		if isRuleFileName(e.Name) {
			byName[e.Name] = append(byName[e.Name], e)
		}
	}
	names := make([]string, 0, len(byName))
	for name := range byName {
		names = append(names, name)
	}
	slices.Sort(names)

	var overridden []Override
	var masks []Mask
	for _, name := range names {
		es := byName[name]
		last := es[len(es)-1]
		for _, e := range es[:len(es)-1] {
			overridden = append(overridden, Override{Name: name, Path: e.Path, By: last.Path})
		}
		if last.Kind == kindEmpty || last.Kind == kindNull {
			masks = append(masks, Mask{Name: name, Path: last.Path, Null: last.Kind == kindNull})
		}
	}
	return overridden, masks
}

package scanner

import (
	"errors"
	"fmt"
	"io"
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

// Bounds of the tree read below one rule directory. Past either, Load
// fails rather than load part of the tree: the part left out could hold
// masks.
const (
	// maxRuleDepth is how many levels of subdirectories are read below a
	// rule directory (its top-level entries are at level 0, the entries
	// of its subdirectories at level 1).
	maxRuleDepth = 16
	// maxRuleEntries is how many directory entries (of any kind, hidden
	// ones included) are read below one rule directory.
	maxRuleEntries = 100000
)

// readDirBatch is how many directory entries are read at a time, so that
// a huge directory is refused before it is read whole.
const readDirBatch = 1024

// entry is one rule file candidate found below a rule directory.
type entry struct {
	// Name is the path of the entry relative to its rule directory,
	// slash-separated ("a.yar", "forge/packages/core/x.yar"): the merge
	// key and the YARA namespace of its rules.
	Name string
	Path string    // where it was found: the rule directory (or the target of a top-level link to a directory) joined with Name
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

// isRuleKey reports whether name is a merge key that a listing can hold:
// at most maxRuleDepth directory names, none empty or hidden, then a rule
// file name, separated by slashes ("a.yar", "sub/dir/b.yara").
func isRuleKey(name string) bool {
	elems := strings.Split(name, "/")
	if len(elems) > maxRuleDepth+1 {
		return false
	}
	for _, d := range elems[:len(elems)-1] {
		if d == "" || d[0] == '.' || strings.ContainsRune(d, 0) {
			return false
		}
	}
	return isRuleFileName(elems[len(elems)-1])
}

// merge decides which rule files load. listing holds the entries of all rule
// directories, those of earlier directories first; the last entry of a name
// wins (systemd drop-in semantics). Entries whose name is not a rule key
// (isRuleKey) are ignored. merge is pure: it looks only at its argument.
func merge(listing []entry) merged {
	last := make(map[string]entry)
	for _, e := range listing {
		if isRuleKey(e.Name) {
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

// listing is what listDirs found in the rule directories.
type listing struct {
	// Entries are the rule file candidates, those of earlier directories
	// first, each directory's in lexical order of Name.
	Entries []entry
	// Missing are the rule directories that do not exist (skipped).
	Missing []string
	// Roots are the rule directories that exist and the targets of their
	// top-level symbolic links to directories, symbolic links resolved:
	// included files must lie below one of them.
	Roots []string
}

// listDirs lists the rule file candidates of dirs, in order, reading each
// directory recursively. Names starting with "." are skipped at every
// level. Symbolic links to directories are followed at the top level of a
// rule directory only (that is how feeds are installed), through their
// target resolved once, so that a link swapped during the walk cannot mix
// two versions; deeper ones are left alone (reported only when named like
// a rule file). Directories that do not exist are skipped and returned in
// Missing. Any other failure to read a directory or a subdirectory, and a
// tree past maxRuleDepth or maxRuleEntries, is an error naming the rule
// directory, since loading without part of it could resurrect files it
// masks. A subdirectory or link target that vanishes during the walk gives
// an error wrapping errChanged: Load starts over.
func listDirs(dirs []string) (listing, error) {
	var l listing
	for _, dir := range dirs {
		fi, err := os.Stat(dir)
		if errors.Is(err, fs.ErrNotExist) {
			l.Missing = append(l.Missing, dir)
			continue
		}
		if err != nil {
			return listing{}, fmt.Errorf("reading rule directory %s: %w", dir, err)
		}
		if !fi.IsDir() {
			return listing{}, fmt.Errorf("reading rule directory %s: not a directory", dir)
		}
		w := ruleWalker{dir: dir}
		if err := w.walk(dir, "", 0); err != nil {
			return listing{}, err
		}
		for _, r := range includeRoots(append([]string{dir}, w.targets...)) {
			if !slices.Contains(l.Roots, r) {
				l.Roots = append(l.Roots, r)
			}
		}
		l.Entries = append(l.Entries, w.out...)
	}
	return l, nil
}

// ruleWalker reads the tree below one rule directory. It is used once, from
// one goroutine.
type ruleWalker struct {
	dir     string   // the rule directory, for errors
	entries int      // directory entries read so far
	out     []entry  // rule file candidates found, in walk order
	targets []string // resolved targets of the top-level links followed
}

// walk reads the directory p, whose entries have the names key+"/"+name
// (name alone when key is ""); depth is the level of those entries.
func (w *ruleWalker) walk(p, key string, depth int) error {
	des, err := w.readDir(p)
	if err != nil {
		return err
	}
	for _, de := range des {
		name := de.Name()
		if name == "" || name[0] == '.' {
			continue
		}
		cp, ckey := filepath.Join(p, name), name
		if key != "" {
			ckey = key + "/" + name
		}
		if isRuleFileName(name) {
			kind, note := classify(cp)
			w.out = append(w.out, entry{Name: ckey, Path: cp, Kind: kind, Note: note})
			continue
		}
		switch {
		case de.IsDir():
			err = w.descend(cp, ckey, depth+1)
		case de.Type()&fs.ModeSymlink != 0 && depth == 0:
			err = w.follow(cp, ckey)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// follow walks the target of the top-level symbolic link p when it is a
// directory; a dangling link is ignored, as any entry that is not a rule
// file or a directory.
func (w *ruleWalker) follow(p, key string) error {
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading rule directory %s: following %s: %w", w.dir, p, err)
	}
	if !fi.IsDir() {
		return nil
	}
	target, err := filepath.EvalSymlinks(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			err = errChanged // swapped or removed since the Stat
		}
		return fmt.Errorf("reading rule directory %s: following %s: %w", w.dir, p, err)
	}
	w.targets = append(w.targets, target)
	return w.descend(target, key, 1)
}

// descend walks the subdirectory p, whose entries are at level depth.
func (w *ruleWalker) descend(p, key string, depth int) error {
	if depth > maxRuleDepth {
		return fmt.Errorf("reading rule directory %s: %s is more than %d directories deep; rule files must be at most %d levels below it",
			w.dir, p, maxRuleDepth, maxRuleDepth)
	}
	return w.walk(p, key, depth)
}

// readDir reads the entries of the directory p, sorted by name, counting
// them against maxRuleEntries.
func (w *ruleWalker) readDir(p string) ([]fs.DirEntry, error) {
	f, err := os.Open(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && p != w.dir {
			err = fmt.Errorf("%w: %w", err, errChanged) // removed since its parent was read
		}
		return nil, fmt.Errorf("reading rule directory %s: %w", w.dir, err)
	}
	defer f.Close()
	var des []fs.DirEntry
	for {
		batch, err := f.ReadDir(readDirBatch)
		w.entries += len(batch)
		if w.entries > maxRuleEntries {
			return nil, fmt.Errorf("reading rule directory %s: more than %d entries below it (at %s); split it or remove files",
				w.dir, maxRuleEntries, p)
		}
		des = append(des, batch...)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading rule directory %s: reading %s: %w", w.dir, p, err)
		}
	}
	slices.SortFunc(des, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return des, nil
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
// (relative path) in a later directory replaced. It is a plain value, read-only within a
// Ruleset.
type Override struct {
	Name string // path relative to the rule directories ("a.yar", "forge/core/x.yar")
	Path string // the entry replaced: a rule file, or a mask
	By   string // the entry in force: a rule file, or a mask
}

// Mask is the entry that masks a name: an empty file or a symbolic link to
// /dev/null. It is a plain value, read-only within a Ruleset.
type Mask struct {
	Name string // path relative to the rule directories that is masked
	Path string // the mask
	Null bool   // Path is /dev/null (a symbolic link to it) rather than an empty file
}

// shadows lists, from the same listing as merge, the entries replaced by a
// later one of the same name (by name, then in directory order) and the
// masks in force (by name). It is pure, like merge.
func shadows(listing []entry) ([]Override, []Mask) {
	byName := make(map[string][]entry)
	for _, e := range listing {
		if isRuleKey(e.Name) {
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

package scanner

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// maxIncludeSize bounds the size of one included file.
const maxIncludeSize = 64 << 20

// includer is the include callback of one compiler: it reads an included
// file only when it lies inside one of the rule directories. It is used by
// one compiler, from one goroutine.
type includer struct {
	roots []string // rule directories, symbolic links resolved

	// names maps an include name, as libyara hands it back as the
	// "including file" of a nested include, to the path it was resolved to.
	names map[string]string
	// refused says why includes failed during the current AddFile;
	// libyara only reports that the callback returned nothing.
	refused []string
	// deps are the includes resolved during the current AddFile, with
	// what reading them gave: they are part of the rules generation.
	deps []dep
}

// dep is a file an include statement resolved to and what reading it
// gave. Reading Path again must give State again for compiled rules to be
// reused (see the cache).
type dep struct {
	Path  string `json:"path"`  // the include resolved against the including file, before symbolic links
	State string `json:"state"` // "sha256:" and the content's hex digest, or "error: " and why it was refused
}

// depState describes the outcome of reading an include for a dep.
func depState(data []byte, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	return "sha256:" + hexSum(data)
}

// includeRoots resolves the symbolic links of the directories that exist:
// the rule directories, and the targets of their top-level links to
// directories (see listDirs, which gives Load its roots). Included files
// must lie below one of them.
func includeRoots(dirs []string) []string {
	var roots []string
	for _, d := range dirs {
		if r, err := filepath.EvalSymlinks(d); err == nil {
			roots = append(roots, r)
		}
	}
	return roots
}

// resolve maps a file name reported by libyara (a rule file's path, or the
// name of an include as written) to the path it stands for; "" is fallback.
func (in *includer) resolve(name, fallback string) string {
	if name == "" {
		return fallback
	}
	if p, ok := in.names[name]; ok {
		return p
	}
	return name
}

// include implements yara.CompilerIncludeFunc. name is resolved relative to
// the directory of the including file (absolute names as given); the file
// is read only when its real path lies inside a rule directory. It returns
// nil, which makes the compile fail, otherwise; the reason is kept in
// in.refused.
func (in *includer) include(name, from, _ string) []byte {
	p := in.path(name, from)
	data, err := readInclude(p, in.roots)
	d := dep{Path: p, State: depState(data, err)}
	if !slices.Contains(in.deps, d) {
		in.deps = append(in.deps, d)
	}
	if err != nil {
		in.refused = append(in.refused, fmt.Sprintf("include %q: %v", name, err))
		return nil
	}
	if in.names == nil {
		in.names = make(map[string]string)
	}
	// libyara reports a nested include's "including file" as the name
	// written in the include statement; includes are parsed depth first,
	// so the latest resolution of a name is the file being parsed.
	in.names[name] = p
	return data
}

// path resolves an include name against the file that includes it.
func (in *includer) path(name, from string) string {
	p := name
	if !filepath.IsAbs(p) {
		p = filepath.Join(filepath.Dir(in.resolve(from, from)), p)
	}
	return filepath.Clean(p)
}

// readInclude reads the included file p when its real path lies inside one
// of roots. It depends only on its arguments and the file system, so that
// checking a cached dep gives what the compile got.
func readInclude(p string, roots []string) ([]byte, error) {
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return nil, err
	}
	if !inside(real, roots) {
		return nil, fmt.Errorf("%s is outside the rule directories (%s); includes must stay inside them",
			real, strings.Join(roots, ", "))
	}
	fi, err := os.Stat(real)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", real)
	}
	if fi.Size() > maxIncludeSize {
		return nil, fmt.Errorf("%s is larger than %d bytes", real, maxIncludeSize)
	}
	data, err := os.ReadFile(real)
	if err != nil {
		return nil, err
	}
	if data == nil {
		data = []byte{}
	}
	return data, nil
}

// inside reports whether the (symlink-free, clean) path p lies inside one
// of the roots.
func inside(p string, roots []string) bool {
	for _, r := range roots {
		if r == "/" || strings.HasPrefix(p, r+"/") {
			return true
		}
	}
	return false
}

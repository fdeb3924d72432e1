package test

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPackageDocs: every package has exactly one package doc comment
// (style.md), so that a reader finds what a package is for in one place.
func TestPackageDocs(t *testing.T) {
	dirs := map[string][]string{} // dir → files with a package doc comment
	err := filepath.WalkDir("..", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != ".." || d.Name() == "testdata" || d.Name() == "bin") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.PackageClauseOnly|parser.ParseComments)
		if err != nil {
			return err
		}
		dir := filepath.Dir(path)
		if _, ok := dirs[dir]; !ok {
			dirs[dir] = nil
		}
		if f.Doc != nil {
			dirs[dir] = append(dirs[dir], filepath.Base(path))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for dir, docs := range dirs {
		if len(docs) != 1 {
			t.Errorf("package %s: %d package doc comments (%v), want exactly 1", dir, len(docs), docs)
		}
	}
}

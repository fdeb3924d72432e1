package scanner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestScanPaths(t *testing.T) {
	root := t.TempDir()
	tree := filepath.Join(root, "tree")
	e := string(eicar())
	writeTree(t, tree, map[string]string{
		"eicar.com":             e,
		"clean.txt":             "nothing to see here\n",
		"owned.txt":             "whose is this?\n",
		"empty":                 "",
		"big.bin":               string(make([]byte, 2000)),
		"sub/deeper/eicar2.com": e,
	})
	writeTree(t, root, map[string]string{"outside/eicar3.com": e})
	if err := syscall.Mkfifo(filepath.Join(tree, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{
		filepath.Join(tree, "sub", "link.com"): filepath.Join(tree, "eicar.com"), // inside a walked directory: not followed
		filepath.Join(root, "cmdlink.com"):     filepath.Join(tree, "eicar.com"), // named on the command line: followed
		filepath.Join(root, "dirlink"):         filepath.Join(root, "outside"),   // likewise, a directory
	} {
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}
	absTree, err := filepath.Abs(tree)
	if err != nil {
		t.Fatal(err)
	}
	uid := os.Getuid()
	extra := filepath.Join(root, "rules")
	writeTree(t, extra, map[string]string{"owned.yar": fmt.Sprintf(
		"rule owned { condition: filename == \"owned.txt\" and filepath == %q and owner == \"user-%d\" }\n", absTree, uid)})
	rs := mustLoad(t, shippedRules, extra)

	type result struct {
		Size    int64
		Rules   []string
		Skipped string
		Err     bool
	}
	detected := []string{"eicar.yar:EICAR_Test_File"}
	want := map[string]result{
		"tree/eicar.com":             {Size: 68, Rules: detected},
		"tree/clean.txt":             {Size: 20},
		"tree/owned.txt":             {Size: 15, Rules: []string{"owned.yar:owned"}},
		"tree/empty":                 {},
		"tree/big.bin":               {Size: 2000, Skipped: SkippedTooLarge},
		"tree/fifo":                  {Skipped: SkippedNotRegular},
		"tree/sub/deeper/eicar2.com": {Size: 68, Rules: detected},
		"tree/sub/link.com":          {Skipped: SkippedNotRegular},
		"cmdlink.com":                {Size: 68, Rules: detected},
		"dirlink/eicar3.com":         {Size: 68, Rules: detected},
		"missing":                    {Err: true},
	}

	paths := []string{tree, filepath.Join(root, "cmdlink.com"), filepath.Join(root, "dirlink"), filepath.Join(root, "missing")}
	got := map[string]result{}
	opts := PathOptions{
		Workers:     3,
		MaxFileSize: 1024,
		Owner:       func(uid uint32) string { return fmt.Sprintf("user-%d", uid) },
	}
	err = rs.ScanPaths(context.Background(), paths, opts, func(r PathResult) {
		rel, err := filepath.Rel(root, r.Path)
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := got[rel]; dup {
			t.Errorf("%s reported twice", rel)
		}
		if r.Err != nil {
			t.Logf("%s: %v", rel, r.Err)
		}
		got[rel] = result{Size: r.Size, Rules: matchNames(r.Matches), Skipped: r.Skipped, Err: r.Err != nil}
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("results mismatch (-want +got):\n%s", diff)
	}
}

func TestScanPathsCanceled(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"a": "x", "b": "y"})
	rs := mustLoad(t, shippedRules)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := rs.ScanPaths(ctx, []string{dir}, PathOptions{}, func(PathResult) {})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("ScanPaths(canceled) = %v, want context.Canceled", err)
	}
}

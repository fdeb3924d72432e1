package scanner

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// generationFormat starts the text that the generation digests; change it
// whenever that text changes, so that no two layouts share a digest.
const generationFormat = "fanguard rules generation 1"

// shortGeneration is the number of hex digits ShortGeneration keeps.
const shortGeneration = 16

// input is an effective rule file as Load read it for the generation.
type input struct {
	entry
	sum string     // hex SHA-256 of the content; "" when err is set
	err *FileError // why the file could not be read; it is then left out
	id  fileID     // identity of what was hashed, checked again before compiling
}

// state describes the content of in for the generation and the cache.
func (in input) state() string {
	if in.err != nil {
		return "error: " + in.err.Msg
	}
	return "sha256:" + in.sum
}

// fileID tells one version of a file from another without reading it: a
// rewrite in place moves ctime, a replacement changes the inode.
type fileID struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64 // nanoseconds since the epoch
}

// statID returns the identity of fi (zero if the system gives none).
func statID(fi fs.FileInfo) fileID {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	}
	return fileID{
		dev: uint64(st.Dev), ino: st.Ino, size: st.Size,
		mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano(),
	}
}

// readInput hashes the rule file e. A file that cannot be read comes back
// with err set, as a broken file to report.
func readInput(e entry) input {
	in := input{entry: e}
	f, err := os.Open(e.Path)
	if err != nil {
		in.err = &FileError{Path: e.Path, Msg: err.Error()}
		return in
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		in.err = &FileError{Path: e.Path, Msg: err.Error()}
		return in
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		in.err = &FileError{Path: e.Path, Msg: err.Error()}
		return in
	}
	in.sum = hex.EncodeToString(h.Sum(nil))
	in.id = statID(fi)
	return in
}

// hexSum returns the hex SHA-256 of data.
func hexSum(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// generation digests what the compiled rules are made of: the libyara
// version, each effective file in load order (name, path, content, and
// the files its includes resolved to with their content, deps[i] for
// files[i]), and the masked names. Text fields are Go-quoted, so that no
// two different inputs give the same text.
func generation(yara string, files []input, deps [][]dep, masked []string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\nyara %q\n", generationFormat, yara)
	for i, f := range files {
		fmt.Fprintf(h, "file %q %q %q\n", f.Name, f.Path, f.state())
		if i < len(deps) {
			for _, d := range deps[i] {
				fmt.Fprintf(h, "include %q %q\n", d.Path, d.State)
			}
		}
	}
	for _, name := range masked {
		fmt.Fprintf(h, "masked %q\n", name)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// ShortGeneration returns the first 16 hex digits of Generation, for
// display; logs and records that must tell generations apart keep the
// whole.
func (rs *Ruleset) ShortGeneration() string {
	if len(rs.Generation) <= shortGeneration {
		return rs.Generation
	}
	return rs.Generation[:shortGeneration]
}

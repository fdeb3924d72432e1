package scanner

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/hillu/go-yara/v4"
)

// The compiled-rules cache keeps rule sets that Load compiled, one file per
// generation in LoadOptions.CacheDir, named GENERATION.rules:
//
//	"fanguard compiled rules\n"
//	header: one line of JSON (cacheHeader), then "\n"
//	the rules as libyara saves them (yr_rules_save_stream)
//	each class set of the partition in force, saved the same way
//
// The header holds everything a Ruleset needs beyond the rules, per rule
// file: the includes it resolved (re-read and compared before use), its
// compiler warnings or why it does not compile. The rules' metadata,
// tags and actions come from the saved rules themselves, so a Ruleset
// read from the cache is the one the compile gave.
const (
	cacheMagic     = "fanguard compiled rules\n"
	cacheFormat    = 2        // layout of the header; entries of another format are ignored
	cacheSuffix    = ".rules" // after the generation
	cacheKeep      = 3        // entries kept, newest first
	cacheTmpPrefix = ".tmp-"  // entries being written
	cacheTmpMaxAge = time.Hour
	maxCacheHeader = 16 << 20 // bytes
	maxCacheRules  = 1 << 30  // bytes
)

// cacheHeader describes a cache entry.
type cacheHeader struct {
	Format      int         `json:"format"`
	Generation  string      `json:"generation"`
	Yara        string      `json:"yara"`
	Masked      []string    `json:"masked"`
	Files       []cacheFile `json:"files"`
	Rules       int         `json:"rules"`        // number of rules
	RulesSize   int64       `json:"rules_size"`   // bytes of saved rules after the header
	RulesSHA256 string      `json:"rules_sha256"` // of those bytes

	Partition *cachePartition `json:"partition"` // the partition Load made of these rules
}

// cachePartition is the partition of the cached rules: what Partition
// says, and the class sets saved after the whole set, in the order of
// Blobs.
type cachePartition struct {
	InForce    bool        `json:"in_force"`
	Reason     string      `json:"reason,omitempty"`
	Whole      []FileError `json:"whole,omitempty"`
	Classes    []ClassSet  `json:"classes,omitempty"`
	EmptyKnown bool        `json:"empty_known"`
	Blobs      []cacheBlob `json:"blobs,omitempty"`
}

// cacheBlob is a class set saved in a cache entry.
type cacheBlob struct {
	Class  Class  `json:"class"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// cacheFile is an input and what compiling it gave.
type cacheFile struct {
	Name  string `json:"name"`
	Path  string `json:"path"`
	State string `json:"state"` // input.state()
	fileResult
}

// errCacheMiss says that a cache entry is not for these inputs.
var errCacheMiss = errors.New("cache entry is for other rules")

// lookupCache returns the compiled rules for inputs from the cache in
// dir (checked by prepareCacheDir), or nil when it holds none. The error
// says which entries could not be read; the caller then compiles.
func lookupCache(dir string, inputs []input, masked, roots []string) (*compiled, error) {
	names, err := cacheEntries(dir)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, name := range names {
		p := filepath.Join(dir, name)
		c, err := readCache(p, inputs, masked, roots)
		if errors.Is(err, errCacheMiss) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("reading cached rules %s: %w", p, err))
			continue
		}
		// Used now: keep it among the newest.
		now := time.Now()
		os.Chtimes(p, now, now)
		return c, errors.Join(errs...)
	}
	return nil, errors.Join(errs...)
}

// readCache reads the cache entry p when it is for inputs. It returns
// errCacheMiss when it is for other rules, and another error when it is
// damaged or not trustworthy.
func readCache(p string, inputs []input, masked, roots []string) (*compiled, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if err := checkOwner(fi); err != nil {
		return nil, err
	}
	r := bufio.NewReader(io.LimitReader(f, int64(len(cacheMagic))+maxCacheHeader+maxCacheRules))
	magic := make([]byte, len(cacheMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != cacheMagic {
		return nil, errors.New("not a fanguard rules cache file")
	}
	line, err := readLine(r, maxCacheHeader)
	if err != nil {
		return nil, fmt.Errorf("reading header: %w", err)
	}
	var h cacheHeader
	if err := json.Unmarshal(line, &h); err != nil {
		return nil, fmt.Errorf("decoding header: %w", err)
	}
	if h.Format != cacheFormat || h.Yara != yaraVersion() {
		return nil, errCacheMiss
	}
	if !h.matches(inputs, masked) {
		return nil, errCacheMiss
	}
	c := &compiled{results: make([]fileResult, len(h.Files))}
	for i, cf := range h.Files {
		for _, d := range cf.Deps {
			if depState(readInclude(d.Path, roots)) != d.State {
				return nil, errCacheMiss
			}
		}
		c.results[i] = cf.fileResult
	}
	gen := generation(yaraVersion(), inputs, c.deps(), masked)
	if h.Generation != gen || filepath.Base(p) != gen+cacheSuffix {
		return nil, fmt.Errorf("generation %.16s in the header (file %s) is not %.16s, that of its inputs",
			h.Generation, filepath.Base(p), gen)
	}

	if h.RulesSize <= 0 || h.RulesSize > maxCacheRules || h.Partition == nil {
		return nil, fmt.Errorf("implausible size of the compiled rules: %d bytes", h.RulesSize)
	}
	want := int64(len(cacheMagic)+len(line)+1) + h.RulesSize
	for _, b := range h.Partition.Blobs {
		if b.Size <= 0 || b.Size > maxCacheRules || b.Class >= numClasses {
			return nil, fmt.Errorf("implausible class set: %v, %d bytes", b.Class, b.Size)
		}
		want += b.Size
	}
	if fi.Size() != want {
		return nil, fmt.Errorf("file holds %d bytes, the header says %d", fi.Size(), want)
	}
	rules, err := readBlob(r, h.RulesSize, h.RulesSHA256)
	if err != nil {
		return nil, err
	}
	c.rules = rules
	fail := func(err error) (*compiled, error) {
		c.destroy()
		return nil, err
	}
	if n := len(rules.GetRules()); n != h.Rules {
		return fail(fmt.Errorf("compiled rules hold %d rules, the header says %d", n, h.Rules))
	}
	for _, b := range h.Partition.Blobs {
		if c.classes[b.Class] != nil {
			return fail(fmt.Errorf("class set %v saved twice", b.Class))
		}
		if c.classes[b.Class], err = readBlob(r, b.Size, b.SHA256); err != nil {
			return fail(fmt.Errorf("class set %v: %w", b.Class, err))
		}
	}
	if _, err := r.ReadByte(); err != io.EOF {
		return fail(errors.New("trailing data after the compiled rules"))
	}
	c.part = h.Partition
	return c, nil
}

// readBlob reads rules saved by libyara, size bytes with the hex SHA-256
// sum.
func readBlob(r io.Reader, size int64, sum string) (*yara.Rules, error) {
	blob := make([]byte, size)
	if _, err := io.ReadFull(r, blob); err != nil {
		return nil, fmt.Errorf("reading compiled rules: %w", err)
	}
	if hexSum(blob) != sum {
		return nil, errors.New("checksum mismatch of the compiled rules")
	}
	rules, err := yara.ReadRules(bytes.NewReader(blob))
	if err != nil {
		return nil, fmt.Errorf("loading compiled rules: %w", err)
	}
	return rules, nil
}

// destroy frees the rules of c.
func (c *compiled) destroy() {
	if c.rules != nil {
		c.rules.Destroy()
		c.rules = nil
	}
	for i, r := range c.classes {
		if r != nil {
			r.Destroy()
			c.classes[i] = nil
		}
	}
}

// matches reports whether h was written for inputs and masked.
func (h *cacheHeader) matches(inputs []input, masked []string) bool {
	if len(h.Files) != len(inputs) || !slices.Equal(h.Masked, masked) {
		return false
	}
	for i, in := range inputs {
		cf := h.Files[i]
		if cf.Name != in.Name || cf.Path != in.Path || cf.State != in.state() {
			return false
		}
	}
	return true
}

// readLine reads up to and without a "\n", at most max bytes.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > max+1 {
			return nil, fmt.Errorf("line longer than %d bytes", max)
		}
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

// storeCache writes the compiled rules c of generation gen to the cache
// in dir (checked by prepareCacheDir), atomically (a temporary file renamed
// into place), and removes all but the newest cacheKeep entries.
func storeCache(dir, gen string, inputs []input, masked []string, c *compiled, rs *Ruleset) error {
	var blob bytes.Buffer
	if err := c.rules.Write(&blob); err != nil {
		return fmt.Errorf("saving compiled rules: %w", err)
	}
	h := cacheHeader{
		Format:      cacheFormat,
		Generation:  gen,
		Yara:        yaraVersion(),
		Masked:      masked,
		Files:       make([]cacheFile, len(inputs)),
		Rules:       rs.Count,
		RulesSize:   int64(blob.Len()),
		RulesSHA256: hexSum(blob.Bytes()),
		Partition: &cachePartition{InForce: rs.Partition.InForce, Reason: rs.Partition.Reason,
			Whole: rs.Partition.Whole, Classes: rs.Partition.Classes, EmptyKnown: rs.emptyKnown},
	}
	parts := [][]byte{[]byte("\n"), blob.Bytes()}
	for cl, r := range rs.classes {
		if r == nil {
			continue
		}
		var b bytes.Buffer
		if err := r.Write(&b); err != nil {
			return fmt.Errorf("saving the %v set: %w", Class(cl), err)
		}
		h.Partition.Blobs = append(h.Partition.Blobs, cacheBlob{Class: Class(cl), Size: int64(b.Len()), SHA256: hexSum(b.Bytes())})
		parts = append(parts, b.Bytes())
	}
	for i, in := range inputs {
		h.Files[i] = cacheFile{Name: in.Name, Path: in.Path, State: in.state(), fileResult: c.results[i]}
	}
	hj, err := json.Marshal(h)
	if err != nil {
		return fmt.Errorf("encoding cache header: %w", err)
	}
	p := filepath.Join(dir, gen+cacheSuffix)
	if err := writeAtomic(p, cacheMagic, append([][]byte{hj}, parts...)...); err != nil {
		return fmt.Errorf("writing cached rules %s: %w", p, err)
	}
	if err := pruneCache(dir, p); err != nil {
		return fmt.Errorf("pruning cache: %w", err)
	}
	return nil
}

// writeAtomic writes the parts to p through a temporary file in the same
// directory (mode 0600), synced before it is renamed into place.
func writeAtomic(p string, first string, parts ...[]byte) (err error) {
	dir := filepath.Dir(p)
	tmp, err := os.CreateTemp(dir, cacheTmpPrefix+"*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(0o600); err != nil {
		return err
	}
	w := bufio.NewWriter(tmp)
	w.WriteString(first)
	for _, part := range parts {
		w.Write(part)
	}
	if err = w.Flush(); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), p); err != nil {
		return err
	}
	// The rename is durable once the directory is synced.
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// cacheEntries lists the names of the cache entries in dir, newest first.
func cacheEntries(dir string) ([]string, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading cache directory: %w", err)
	}
	type named struct {
		name string
		mod  time.Time
	}
	var es []named
	for _, de := range des {
		if !isCacheName(de.Name()) || !de.Type().IsRegular() {
			continue
		}
		fi, err := de.Info()
		if err != nil {
			continue // removed meanwhile
		}
		es = append(es, named{de.Name(), fi.ModTime()})
	}
	slices.SortFunc(es, func(a, b named) int {
		if c := b.mod.Compare(a.mod); c != 0 {
			return c
		}
		return strings.Compare(a.name, b.name)
	})
	names := make([]string, len(es))
	for i, e := range es {
		names[i] = e.name
	}
	return names, nil
}

// isCacheName reports whether name is that of a cache entry: 64 lower-case
// hex digits and cacheSuffix.
func isCacheName(name string) bool {
	gen, ok := strings.CutSuffix(name, cacheSuffix)
	if !ok || len(gen) != sha256.Size*2 {
		return false
	}
	_, err := hex.DecodeString(gen)
	return err == nil && strings.ToLower(gen) == gen
}

// pruneCache removes all cache entries of dir but the newest cacheKeep
// (keep among them), and temporary files left by writers that died. It
// touches no other file.
func pruneCache(dir, keep string) error {
	names, err := cacheEntries(dir)
	if err != nil {
		return err
	}
	var errs []error
	kept := 0
	for _, name := range names {
		p := filepath.Join(dir, name)
		if p == keep || kept < cacheKeep-1 {
			if p != keep {
				kept++
			}
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, de := range des {
		if !strings.HasPrefix(de.Name(), cacheTmpPrefix) {
			continue
		}
		if fi, err := de.Info(); err == nil && time.Since(fi.ModTime()) > cacheTmpMaxAge {
			os.Remove(filepath.Join(dir, de.Name()))
		}
	}
	return errors.Join(errs...)
}

// prepareCacheDir creates the cache directory (mode 0700) when missing and
// refuses one that is not a directory, or that another user owns or may
// write to: compiled rules are trusted as they are, so whoever can write
// them decides what is detected.
func prepareCacheDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating cache directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("checking cache directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("cache directory %s is not a directory", dir)
	}
	if err := checkOwner(fi); err != nil {
		return fmt.Errorf("not using cache directory %s: %w", dir, err)
	}
	return nil
}

// checkOwner refuses a file that another user owns or may write to.
func checkOwner(fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return errors.New("cannot tell the owner")
	}
	if int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("owned by uid %d, not %d", st.Uid, os.Geteuid())
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("writable by group or others (mode %v); chmod go-w", fi.Mode().Perm())
	}
	return nil
}

package policy

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

// Limits of Load, so that a wrong file or directory cannot fill the
// daemon's memory.
const (
	maxConfigFile  = 1 << 20  // bytes of one file, the main file or a drop-in
	maxConfigTotal = 16 << 20 // bytes of the main file and its drop-ins together
	maxDropIns     = 1000     // *.toml names in the drop-in directory
)

// DropInExt is the extension of the files read from the drop-in directory.
const DropInExt = ".toml"

// LoadOptions tune LoadWith. The zero value is what Load does.
type LoadOptions struct {
	// MissingOK makes a missing main file stand for the built-in
	// defaults (Default), with the drop-ins still applied over them.
	// Without it, a missing main file is an error that wraps
	// fs.ErrNotExist.
	MissingOK bool
}

// Sources names the files a configuration was read from.
type Sources struct {
	// Main is the main file's path; "" when it is missing (with
	// LoadOptions.MissingOK).
	Main string
	// DropIns are the paths of the drop-ins read, in the order they
	// were applied; nil when there are none.
	DropIns []string
}

// DropInDir returns the drop-in directory of the configuration file at
// path: path + ".d", such as /etc/fanguard/fanguard.toml.d.
func DropInDir(path string) string { return path + ".d" }

// Load reads the configuration file at path, then its drop-ins, and
// validates the result as Parse does.
//
// The drop-ins are the files named *.toml in DropInDir(path), regular
// files or symbolic links to one, applied in the lexical (byte) order of
// their names over the main file and the drop-ins before them; names that
// start with "." are skipped, and so are entries that are not regular
// files (a directory, or a symbolic link to /dev/null, which masks the
// name). A missing directory means no drop-ins. Each drop-in sets only the
// keys it names; a value replaces the earlier one whole: an array (such
// as protect.paths) is not appended to, and [[feeds]] entries in a
// drop-in replace every feed of the files before it. Checks that involve
// several keys (such as update.dir being one of rules.dirs) are made on
// the result.
//
// Every error names the file that has the problem and, where known, the
// line: a bad value is reported in the file that set it ("/etc/fanguard/
// fanguard.toml.d/50-enforce.toml:2: mode: ..."), a syntax error or an
// unknown key in the file it is in. A file is at most 1 MiB, all of them
// together 16 MiB, and the directory holds at most 1000 *.toml names;
// beyond that Load fails. If the main file does not exist, the error wraps
// fs.ErrNotExist. On error the returned Config is the zero value.
func Load(path string) (Config, error) {
	cfg, _, err := LoadWith(path, LoadOptions{})
	return cfg, err
}

// LoadWith is Load with options, and it also returns the files it read.
func LoadWith(path string, opts LoadOptions) (Config, Sources, error) {
	var src Sources
	data, _, err := readConfig(path, false)
	switch {
	case err == nil:
		src.Main = path
	case opts.MissingOK && errors.Is(err, fs.ErrNotExist):
		data = nil
	default:
		return Config{}, Sources{}, err
	}
	docs := []*document{{file: path, data: data}}
	total := len(data)

	dir := DropInDir(path)
	names, err := dropInNames(dir)
	if err != nil {
		return Config{}, Sources{}, err
	}
	for _, name := range names {
		p := filepath.Join(dir, name)
		data, skip, err := readConfig(p, true)
		if err != nil {
			return Config{}, Sources{}, err
		}
		if skip {
			continue
		}
		if total += len(data); total > maxConfigTotal {
			return Config{}, Sources{}, fmt.Errorf("reading config drop-in %s: the configuration files together are larger than %d MiB", p, maxConfigTotal>>20)
		}
		docs = append(docs, &document{file: p, data: data})
		src.DropIns = append(src.DropIns, p)
	}

	cfg, err := parse(docs)
	if err != nil {
		return Config{}, Sources{}, err
	}
	return cfg, src, nil
}

// dropInNames returns the names of the drop-ins in dir, sorted: the
// names ending in DropInExt that do not start with ".". A missing dir has
// none.
func dropInNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading config drop-ins: %w", err)
	}
	defer f.Close()
	var names []string
	for {
		// In batches: a directory of many other files costs one batch.
		entries, err := f.ReadDir(256)
		for _, e := range entries {
			name := e.Name()
			if strings.HasPrefix(name, ".") || !strings.HasSuffix(name, DropInExt) {
				continue
			}
			if len(names) == maxDropIns {
				return nil, fmt.Errorf("reading config drop-ins: %s holds more than %d *%s files", dir, maxDropIns, DropInExt)
			}
			names = append(names, name)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading config drop-ins: %w", err)
		}
	}
	slices.Sort(names)
	return names, nil
}

// readConfig reads the configuration file at path, at most maxConfigFile
// bytes. A drop-in is opened without blocking (a FIFO must not hold the
// daemon) and skip reports that it is not a regular file, to be left out.
func readConfig(path string, dropIn bool) (data []byte, skip bool, err error) {
	what, flag := "config", os.O_RDONLY
	if dropIn {
		what, flag = "config drop-in", os.O_RDONLY|syscall.O_NONBLOCK
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, false, fmt.Errorf("reading %s: %w", what, err)
	}
	defer f.Close()
	if dropIn {
		fi, err := f.Stat()
		if err != nil {
			return nil, false, fmt.Errorf("reading %s: %w", what, err)
		}
		if !fi.Mode().IsRegular() {
			return nil, true, nil
		}
	}
	data, err = io.ReadAll(io.LimitReader(f, maxConfigFile+1))
	if err != nil {
		return nil, false, fmt.Errorf("reading %s: %w", what, err)
	}
	if len(data) > maxConfigFile {
		return nil, false, fmt.Errorf("reading %s %s: larger than %d MiB", what, path, maxConfigFile>>20)
	}
	return data, false, nil
}

package policy

import (
	"encoding/base64"
	"encoding/hex"
	"net/url"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// What each [[feeds]] key allows, as error messages print it.
const (
	wantFeeds       = `[[feeds]] entries, each a table with at least name and url`
	wantFeedName    = `1 to 64 characters among a-z, 0-9, ".", "_" and "-", starting with a letter or digit, such as "yara-forge-core"`
	wantFeedURL     = `an "https://" address, or an absolute path of a directory or an archive, such as "/srv/mirror/rules.zip"`
	wantSubdir      = `a relative path inside the feed, with "/" between names and no "." or ".." element, such as "packages/core", or "" for all of it`
	wantSHA256      = `64 hexadecimal digits, as sha256sum prints them, or "" for no pinned digest`
	wantMinisignKey = `a minisign public key: the base64 line of its .pub file, such as "RWQ…" (56 characters), or ""`
	wantSigURL      = `an "https://" address or an absolute path of the .minisig file, or "" for url + ".minisig"`
	wantGlobs       = `an array of glob patterns (path.Match syntax), such as ["*.yar", "*.yara"]`
	wantCAFile      = `an absolute path of a PEM file of CA certificates, or "" for the system's only`
)

// minisignKeyLen is the length of a decoded minisign public key: the
// algorithm "Ed", an 8-byte key id and a 32-byte Ed25519 key.
const minisignKeyLen = 42

// defaultInclude returns FeedConfig.Include's default, a fresh slice.
func defaultInclude() []string { return []string{"*.yar", "*.yara"} }

// rawFeed is one [[feeds]] entry as decoded: each value as in rawConfig,
// nil when absent. Its tags name the keys an entry may hold.
type rawFeed struct {
	Name         any `toml:"name"`
	URL          any `toml:"url"`
	Subdir       any `toml:"subdir"`
	SHA256       any `toml:"sha256"`
	MinisignKey  any `toml:"minisign_key"`
	SignatureURL any `toml:"signature_url"`
	Include      any `toml:"include"`
	Exclude      any `toml:"exclude"`
	CAFile       any `toml:"ca_file"`
	MaxSize      any `toml:"max_size"`
}

// update validates the [update] table raw and stores it in u. It reports
// whether update.dir is valid (or absent).
func (c *checker) update(raw *rawUpdate, u *UpdateConfig) (dirOK bool) {
	dirOK = raw.Dir == nil
	if dir, ok := c.path("update.dir", raw.Dir, wantUpdateDir, false); ok {
		u.Dir, dirOK = dir, true
	}
	if n, ok := c.integer("update.canary_files", raw.CanaryFiles, 0, maxCanaryFiles, wantCanary); ok {
		u.CanaryFiles = int(n)
	}
	if d, ok := c.duration("update.max_scan_cost", raw.MaxScanCost, wantScanCost); ok {
		if d < minScanCost || d > maxScanCost {
			c.bad("update.max_scan_cost", -1, raw.MaxScanCost, "is out of range", wantScanCost)
		} else {
			u.MaxScanCost = d
		}
	}
	if v := raw.MaxAge; v != nil {
		if d, ok := parseAge(v); ok {
			u.MaxAge = d
		} else {
			c.bad("update.max_age", -1, v, "is not a duration", wantUpdateAge)
		}
	}
	if d, ok := c.duration("update.timeout", raw.Timeout, wantFeedTimeout); ok {
		if d < minFeedTimeout || d > maxFeedTimeout {
			c.bad("update.timeout", -1, raw.Timeout, "is out of range", wantFeedTimeout)
		} else {
			u.Timeout = d
		}
	}
	return dirOK
}

// feedsDirUnloaded records that update.dir, dir, is not one of rules.dirs.
// The error is put on the line of update.dir, or, if the files leave it
// to its default, of rules.dirs or else of the first feed, in the file
// that sets it (a drop-in may).
func (c *checker) feedsDirUnloaded(dir string, isDefault bool) {
	doc, line := c.where("update.dir", -1)
	for _, key := range []string{"rules.dirs", "feeds[1]"} {
		if line == 0 {
			doc, line = c.where(key, -1)
		}
	}
	what := quote(dir)
	if isDefault {
		what += " (the default)"
	}
	c.failAt(doc, line, "update.dir", what+" is not one of rules.dirs, so the feeds would never load: add it to rules.dirs, between the shipped and your directories (want "+wantUpdateDir+")")
}

// feeds validates the [[feeds]] entries v and returns them, each with its
// defaults filled in; nil if there are none.
func (c *checker) feeds(v any) []FeedConfig {
	if v == nil {
		return nil
	}
	entries, ok := v.([]any)
	if !ok {
		c.bad("feeds", -1, v, "is not an array of tables", wantFeeds)
		return nil
	}
	var out []FeedConfig
	names := make(map[string]string) // name → label of the entry that has it
	for i, e := range entries {
		m, ok := e.(map[string]any)
		if !ok {
			c.bad("feeds", i, e, "is not a table", wantFeeds)
			continue
		}
		f := c.feed(i+1, m)
		if first, dup := names[f.Name]; dup && f.Name != "" {
			c.bad(c.feedKey(i+1, m, "name"), -1, f.Name, "is already the name of "+first, "a name unique among the feeds")
		} else if f.Name != "" {
			names[f.Name] = c.feedLabel(i+1, m)
		}
		out = append(out, f)
	}
	return out
}

// feedLabel names the n-th (from 1) [[feeds]] entry, m, in messages:
// feeds[2] ("forge"), or feeds[2] if it has no name.
func (c *checker) feedLabel(n int, m map[string]any) string {
	label := "feeds[" + strconv.Itoa(n) + "]"
	if name, ok := m["name"].(string); ok {
		label += " (" + quote(name) + ")"
	}
	return label
}

// feedKey returns the key of the n-th entry's key k as messages print it,
// and makes c.line find its position. k "" is the entry itself.
func (c *checker) feedKey(n int, m map[string]any, k string) string {
	label, pos := c.feedLabel(n, m), "feeds["+strconv.Itoa(n)+"]"
	if k != "" {
		label, pos = label+"."+k, pos+"."+k
	}
	if c.alias == nil {
		c.alias = make(map[string]string)
	}
	c.alias[label] = pos
	return label
}

// feed validates the n-th (from 1) [[feeds]] entry, m.
func (c *checker) feed(n int, m map[string]any) FeedConfig {
	key := func(k string) string { return c.feedKey(n, m, k) }
	var raw rawFeed
	rv := reflect.ValueOf(&raw).Elem()
	var unknown []string
	for k, v := range m {
		if f, ok := fieldByTag(rv.Type(), k); ok {
			if v != nil { // TOML has no null; go-toml never gives one
				rv.FieldByIndex(f.Index).Set(reflect.ValueOf(v))
			}
		} else {
			unknown = append(unknown, k)
		}
	}
	slices.Sort(unknown)
	for _, k := range unknown {
		doc, line := c.where(key(k), -1)
		if line == 0 {
			doc, line = c.where(key(""), -1)
		}
		msg := "unknown key " + quote(k)
		if _, isTable := m[k].(map[string]any); isTable {
			msg = "unknown table " + quote(k)
		}
		if isTopLevelKey(k) {
			msg += " (" + k + " is a top-level key: move it above the first [table])"
		} else {
			msg += " (" + knownKeys([]string{"feeds"}) + ")"
		}
		c.failAt(doc, line, key(""), msg)
	}

	f := FeedConfig{MaxSize: 256 << 20}
	if raw.Name == nil {
		c.fail(key(""), -1, "name is missing (want "+wantFeedName+")")
	} else if s, ok := c.str(key("name"), raw.Name, wantFeedName); ok {
		if validFeedName(s) {
			f.Name = s
		} else {
			c.bad(key("name"), -1, s, "is not allowed", wantFeedName)
		}
	}
	local := false
	if raw.URL == nil {
		c.fail(key(""), -1, "url is missing (want "+wantFeedURL+")")
	} else if s, isLocal, ok := c.source(key("url"), raw.URL, wantFeedURL, false); ok {
		f.URL, local = s, isLocal
	}
	if s, ok := c.str(key("subdir"), raw.Subdir, wantSubdir); ok {
		if why := whyNotSubdir(s); why != "" {
			c.bad(key("subdir"), -1, s, why, wantSubdir)
		} else if s != "" {
			f.Subdir = path.Clean(s)
		}
	}
	if s, ok := c.str(key("sha256"), raw.SHA256, wantSHA256); ok {
		if _, err := hex.DecodeString(s); s != "" && (len(s) != 64 || err != nil) {
			c.bad(key("sha256"), -1, s, "is not a sha256 digest", wantSHA256)
		} else {
			f.SHA256 = strings.ToLower(s)
		}
	}
	if s, ok := c.str(key("minisign_key"), raw.MinisignKey, wantMinisignKey); ok {
		if why := whyNotMinisignKey(s); why != "" {
			c.bad(key("minisign_key"), -1, s, why, wantMinisignKey)
		} else {
			f.MinisignKey = strings.TrimSpace(s)
		}
	}
	// A minisign_key given but wrong is reported above, not here too.
	keyGiven := raw.MinisignKey != nil && raw.MinisignKey != ""
	if raw.SignatureURL != nil && raw.SignatureURL != "" && !keyGiven {
		c.bad(key("signature_url"), -1, raw.SignatureURL, "is set but minisign_key is not, so there is no key to check the signature with", "minisign_key set too, or no signature_url")
	} else if s, _, ok := c.source(key("signature_url"), raw.SignatureURL, wantSigURL, true); ok {
		f.SignatureURL = s
	}
	if f.SignatureURL == "" && f.MinisignKey != "" && f.URL != "" {
		f.SignatureURL = f.URL + ".minisig"
	}
	f.Include = defaultInclude()
	if globs, ok := c.globs(key("include"), raw.Include); ok {
		if len(globs) == 0 {
			c.fail(key("include"), -1, `the list is empty, so no file of the feed would be installed (want at least one glob pattern, such as "*.yar", or no include for ["*.yar", "*.yara"])`)
		} else {
			f.Include = globs
		}
	}
	if globs, ok := c.globs(key("exclude"), raw.Exclude); ok && len(globs) > 0 {
		f.Exclude = globs
	}
	if p, ok := c.path(key("ca_file"), raw.CAFile, wantCAFile, true); ok {
		if p != "" && local {
			c.bad(key("ca_file"), -1, raw.CAFile, "is set but url is a local path, read without TLS", `"" with a local url`)
		} else {
			f.CAFile = p
		}
	}
	if n, ok := c.size(key("max_size"), raw.MaxSize, minFeedSize, maxFeedSize, wantFeedSize); ok {
		f.MaxSize = n
	}
	return f
}

// source returns v, an "https://" address or an absolute path (cleaned),
// and whether it is a local path; "" only if allowEmpty.
func (c *checker) source(key string, v any, want string, allowEmpty bool) (s string, local, ok bool) {
	if s, ok = c.str(key, v, want); !ok || (s == "" && allowEmpty) {
		return s, false, ok
	}
	switch {
	case s == "":
		c.bad(key, -1, s, "is empty", want)
		return "", false, false
	case strings.IndexByte(s, 0) >= 0:
		c.bad(key, -1, s, "contains a NUL byte", want)
		return "", false, false
	}
	if filepath.IsAbs(s) {
		return filepath.Clean(s), true, true
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		c.bad(key, -1, s, "is not a valid address", want)
	case u.Scheme == "":
		c.bad(key, -1, s, "is a relative path", want)
	case u.Scheme != "https":
		c.bad(key, -1, s, "is not an https address: rules must come over a connection that authenticates the server", want)
	case u.Hostname() == "":
		c.bad(key, -1, s, "has no host", want)
	default:
		return s, false, true
	}
	return "", false, false
}

// globs returns v as a list of glob patterns; an empty list is returned
// as an empty, non-nil slice, and ok is false if any element is wrong.
func (c *checker) globs(key string, v any) ([]string, bool) {
	a, ok := c.array(key, v, wantGlobs)
	if !ok {
		return nil, false
	}
	out := []string{}
	for i, e := range a {
		s, isStr := e.(string)
		switch {
		case !isStr:
			c.bad(key, i, e, "is not a glob pattern", wantGlobs)
			ok = false
		case s == "":
			c.bad(key, i, e, "matches no file", wantGlobs)
			ok = false
		default:
			if _, err := path.Match(s, ""); err != nil {
				c.bad(key, i, e, "is not a valid pattern", wantGlobs)
				ok = false
				continue
			}
			out = append(out, s)
		}
	}
	if !ok {
		return nil, false
	}
	if len(out) > 0 {
		out = dedupe(out)
	}
	return out, true
}

// validFeedName reports whether s is allowed as a feed name:
// [a-z0-9][a-z0-9._-]{0,63}.
func validFeedName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := range len(s) {
		switch b := s[i]; {
		case 'a' <= b && b <= 'z', '0' <= b && b <= '9':
		case i > 0 && (b == '.' || b == '_' || b == '-'):
		default:
			return false
		}
	}
	return true
}

// whyNotSubdir says what is wrong with s as a subdir, or "".
func whyNotSubdir(s string) string {
	switch {
	case s == "":
		return ""
	case strings.IndexByte(s, 0) >= 0:
		return "contains a NUL byte"
	case strings.HasPrefix(s, "/"):
		return "is an absolute path"
	}
	for _, e := range strings.Split(s, "/") {
		if e == "." || e == ".." {
			return "has a " + quote(e) + " element"
		}
	}
	return ""
}

// whyNotMinisignKey says what is wrong with s as a minisign public key, or
// "". Only the shape is checked: base64 of "Ed", a key id and a key.
func whyNotMinisignKey(s string) string {
	if s == "" {
		return ""
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	switch {
	case strings.HasPrefix(strings.TrimSpace(s), "untrusted comment:"):
		return "is a whole .pub file: keep only its second line, the key"
	case err != nil:
		return "is not base64"
	case len(b) != minisignKeyLen:
		return "decodes to " + strconv.Itoa(len(b)) + " bytes, not " + strconv.Itoa(minisignKeyLen)
	case string(b[:2]) != "Ed":
		return `is not an Ed25519 key (its algorithm is not "Ed")`
	}
	return ""
}

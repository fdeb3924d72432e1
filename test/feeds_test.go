package test

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"aead.dev/minisign"
	"golang.org/x/sys/unix"
)

// feedServer serves one archive over HTTPS, as a rule collection's release
// address does, with an ETag for conditional requests. It counts the full
// downloads.
type feedServer struct {
	srv *httptest.Server
	ca  string // PEM file of the server's certificate, for [[feeds]] ca_file

	mu        sync.Mutex
	body      []byte
	sig       []byte // served at .minisig
	truncate  bool   // close the connection halfway through the body
	downloads int
}

func newFeedServer(t *testing.T) *feedServer {
	t.Helper()
	fs := &feedServer{}
	fs.srv = httptest.NewTLSServer(http.HandlerFunc(fs.serve))
	t.Cleanup(fs.srv.Close)
	fs.ca = filepath.Join(t.TempDir(), "ca.pem")
	pemData := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: fs.srv.Certificate().Raw})
	if err := os.WriteFile(fs.ca, pemData, 0o644); err != nil {
		t.Fatal(err)
	}
	return fs
}

func (fs *feedServer) set(body, sig []byte, truncate bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.body, fs.sig, fs.truncate = body, sig, truncate
}

func (fs *feedServer) count() int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.downloads
}

func (fs *feedServer) serve(w http.ResponseWriter, r *http.Request) {
	fs.mu.Lock()
	body, sig, truncate := fs.body, fs.sig, fs.truncate
	fs.mu.Unlock()
	if strings.HasSuffix(r.URL.Path, ".minisig") {
		w.Write(sig)
		return
	}
	sum := sha256.Sum256(body)
	etag := `"` + hex.EncodeToString(sum[:8]) + `"`
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	fs.mu.Lock()
	fs.downloads++
	fs.mu.Unlock()
	w.Header().Set("ETag", etag)
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	if !truncate {
		w.Write(body)
		return
	}
	w.Write(body[:len(body)/2])
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			conn.Close()
		}
	}
}

func (fs *feedServer) url() string { return fs.srv.URL + "/releases/latest/download/rules.zip" }

// archiveFile is one entry of a test archive.
type archiveFile struct {
	name string
	data []byte
	mode int64 // tar type flag or 0 for a regular file
	link string
}

// zipOf builds a zip archive of files.
func zipOf(t *testing.T, files []archiveFile) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for _, f := range files {
		w, err := zw.Create(f.name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(f.data)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// tarGzOf builds a tar.gz archive of files, links included.
func tarGzOf(t *testing.T, files []archiveFile) []byte {
	t.Helper()
	var b bytes.Buffer
	gz := gzip.NewWriter(&b)
	tw := tar.NewWriter(gz)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), Typeflag: tar.TypeReg, Linkname: f.link}
		if f.mode != 0 {
			h.Typeflag, h.Size = byte(f.mode), 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write(f.data)
		}
	}
	tw.Close()
	gz.Close()
	return b.Bytes()
}

// bombTarGz is a tar.gz of one entry that declares and holds 10 GiB of
// zeros, about 10 MB compressed: gzip members of 64 MiB of zeros, one after
// the other (a gzip stream may hold many).
func bombTarGz(t *testing.T) []byte {
	t.Helper()
	var hdr bytes.Buffer
	tw := tar.NewWriter(&hdr)
	if err := tw.WriteHeader(&tar.Header{Name: "yara/bomb.yar", Mode: 0o644, Size: 10 << 30, Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Flush() // the header only: the data follows
	var out bytes.Buffer
	gz := gzip.NewWriter(&out)
	gz.Write(hdr.Bytes())
	gz.Close()
	var member bytes.Buffer
	gz, _ = gzip.NewWriterLevel(&member, gzip.BestCompression)
	zeros := make([]byte, 1<<20)
	for range 64 {
		gz.Write(zeros)
	}
	gz.Close()
	for range 160 {
		out.Write(member.Bytes())
	}
	return out.Bytes()
}

// rlArchiveFiles are the rule files of the ReversingLabs set, laid out as
// its repository is (yara/CATEGORY/FILE.yara), plus extra files.
func rlArchiveFiles(t *testing.T, extra ...archiveFile) []archiveFile {
	t.Helper()
	var files []archiveFile
	for _, dir := range reversingLabs(t) {
		paths, _ := filepath.Glob(filepath.Join(dir, "*.yara"))
		for _, p := range paths {
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, archiveFile{name: "reversinglabs-yara-rules-develop/yara/" + filepath.Base(dir) + "/" + filepath.Base(p), data: data})
		}
	}
	files = append(files, archiveFile{name: "reversinglabs-yara-rules-develop/README.md", data: []byte("not a rule file\n")})
	return append(files, extra...)
}

// markerRule is a feed's own rule, so that the test can tell which
// version of the feed is in force by the file it detects.
func markerRule(marker string) archiveFile {
	return archiveFile{name: "reversinglabs-yara-rules-develop/yara/fanguard-test/marker.yara", data: []byte(fmt.Sprintf(
		"rule feed_marker_%s {\n\tstrings: $m = \"FANGUARD-FEED-MARKER-%s\"\n\tcondition: $m\n}\n", marker, marker))}
}

// feedTables is the configuration of the tests' feed: [update] and one
// [[feeds]] entry with extra keys.
func feedTables(feedsDir, url, ca, extra string) string {
	return fmt.Sprintf("\n[update]\ndir = %q\n\n[[feeds]]\nname = \"rl\"\nurl = %q\nsubdir = \"reversinglabs-yara-rules-develop/yara\"\nca_file = %q\n%s\n",
		feedsDir, url, ca, extra)
}

// feedConfig writes a configuration for the command line: the daemon's,
// with extra keys in the feed's entry.
func feedConfig(t *testing.T, d *daemon, feedsDir, url, ca, extra string) string {
	t.Helper()
	base, err := os.ReadFile(d.Config)
	if err != nil {
		t.Fatal(err)
	}
	own := feedTables(feedsDir, url, ca, "")
	if !strings.Contains(string(base), own) {
		t.Fatalf("the daemon's configuration has no feed tables:\n%s", base)
	}
	cfg := strings.Replace(string(base), own, feedTables(feedsDir, url, ca, extra), 1)
	p := filepath.Join(t.TempDir(), "fanguard.toml")
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// fanguard runs the command line and returns its output and exit status.
func fanguard(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("fanguard %s: %v\n%s", strings.Join(args, " "), err, out)
	return "", -1
}

// readFeedState reads the feed's state as rules update left it.
func readFeedState(t *testing.T, feedsDir string) (current, previous string, rejected []string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(feedsDir, ".store", "rl", "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Current, Previous *struct {
			ID string `json:"id"`
		}
		Rejected []string `json:"rejected"`
	}
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	if st.Current != nil {
		current = st.Current.ID
	}
	if st.Previous != nil {
		previous = st.Previous.ID
	}
	return current, previous, st.Rejected
}

// denied reports whether opening a file with content on the protected
// tmpfs is denied.
func denied(t *testing.T, d *daemon, name, content string) bool {
	t.Helper()
	p := filepath.Join(d.Dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil && !errors.Is(err, unix.EPERM) {
		t.Fatal(err)
	}
	_, err := os.ReadFile(p)
	if err != nil && !errors.Is(err, unix.EPERM) {
		t.Fatal(err)
	}
	return errors.Is(err, unix.EPERM)
}

// waitDenied waits up to 30 s for the daemon to deny (or allow) content:
// a reload takes a moment.
func waitDenied(t *testing.T, d *daemon, name, content string, want bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		if denied(t, d, fmt.Sprintf("%s-%d", name, i), content) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: denied = %v after 30 s, want %v; log:\n%s", name, !want, want, d.Log())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestFeedUpdate serves the ReversingLabs set as a feed over real HTTPS
// and follows it through the life of a feed: installed and detecting,
// unchanged and not downloaded again, every kind of bad version refused
// with the rules in force untouched, a rule matching /usr/bin/ls held back
// by the canary, a rollback, and a broken version at start.
func TestFeedUpdate(t *testing.T) {
	feedsDir := filepath.Join(t.TempDir(), "feeds.d")
	srv := newFeedServer(t)
	d := startDaemon(t, options{ruleDirs: []string{feedsDir}, tables: feedTables(feedsDir, srv.url(), srv.ca, "")})
	cfg := d.Config
	link := filepath.Join(feedsDir, "rl")

	// 1. The first version installs, with its subdirectories, and the
	// daemon detects with it.
	v1 := zipOf(t, rlArchiveFiles(t, markerRule("ONE")))
	srv.set(v1, nil, false)
	start := time.Now()
	out, code := fanguard(t, "rules", "update", "--config", cfg)
	took := time.Since(start)
	if code != 0 || !strings.Contains(out, "rl: installed version") || !strings.Contains(out, "rules reloaded") {
		t.Fatalf("first update: exit %d\n%s", code, out)
	}
	t.Logf("first update of the ReversingLabs feed (%d KiB) took %v:\n%s", len(v1)>>10, took.Round(time.Millisecond), out)
	target1, err := os.Readlink(link)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(link, "backdoor")); err != nil {
		t.Errorf("the feed's subdirectories are not installed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(link, "README.md")); err == nil {
		t.Error("README.md was installed: only rule files should be")
	}
	waitDenied(t, d, "marker-one", "FANGUARD-FEED-MARKER-ONE", true)
	if denied(t, d, "clean", "nothing to see") {
		t.Error("a clean file is denied")
	}
	cur1, _, _ := readFeedState(t, feedsDir)
	if cur1 != sha256Hex(v1) {
		t.Errorf("state current = %.16s, want the archive's sha256 %.16s", cur1, sha256Hex(v1))
	}

	// 2. Unchanged: a conditional request, nothing downloaded.
	n := srv.count()
	out, code = fanguard(t, "rules", "update", "--config", cfg)
	if code != 0 || !strings.Contains(out, "rl: unchanged") || srv.count() != n {
		t.Errorf("second update: exit %d, downloads %d → %d, want unchanged and none\n%s", code, n, srv.count(), out)
	}

	// 3. Bad versions: each fails with a clear error and leaves the
	// version in force.
	_, otherPriv, err := minisign.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	pub, priv, err := minisign.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	pubText, _ := pub.MarshalText()
	_, pubKey, _ := strings.Cut(strings.TrimSpace(string(pubText)), "\n") // the key line of the .pub file
	small := zipOf(t, []archiveFile{markerRule("BAD")})
	bad := []struct {
		name    string
		body    []byte
		sig     []byte
		trunc   bool
		extra   string
		wantErr []string
	}{
		{"wrong sha256", small, nil, false, "sha256 = \"" + strings.Repeat("ab", 32) + "\"", []string{"sha256"}},
		{"signature of other content", small, minisign.Sign(priv, []byte("something else")), false,
			fmt.Sprintf("minisign_key = %q", pubKey), []string{"signature"}},
		{"signature by another key", small, minisign.Sign(otherPriv, small), false,
			fmt.Sprintf("minisign_key = %q", pubKey), []string{"signature"}},
		{"truncated download", zipOf(t, rlArchiveFiles(t, markerRule("TRUNC"))), nil, true, "", []string{"rl"}},
		{"path with ..", tarGzOf(t, []archiveFile{{name: "reversinglabs-yara-rules-develop/yara/../../../x.yar", data: []byte("rule x { condition: true }")}}), nil, false, "", []string{".."}},
		{"symbolic link", tarGzOf(t, []archiveFile{{name: "reversinglabs-yara-rules-develop/yara/x.yar", mode: tar.TypeSymlink, link: "/etc/shadow"}}), nil, false, "", []string{"x.yar"}},
		{"10 GiB bomb", bombTarGz(t), nil, false, "", []string{"bomb.yar"}},
		{"rule that does not compile", zipOf(t, rlArchiveFiles(t, archiveFile{name: "reversinglabs-yara-rules-develop/yara/fanguard-test/broken.yara",
			data: []byte("rule broken {\n\tcondition: $nope\n}\n")})), nil, false, "", []string{"rl/fanguard-test/broken.yara:", "undefined string", "does not compile"}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			srv.set(tc.body, tc.sig, tc.trunc)
			c := feedConfig(t, d, feedsDir, srv.url(), srv.ca, tc.extra)
			start := time.Now()
			out, code := fanguard(t, "rules", "update", "--config", c)
			t.Logf("refused in %v", time.Since(start).Round(time.Millisecond))
			if code != 1 || !strings.Contains(out, "rl: failed, the version in force stays") {
				t.Errorf("exit %d, want 1 and a failure:\n%s", code, out)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(out, w) {
					t.Errorf("the error does not mention %q:\n%s", w, out)
				}
			}
			if got, _ := os.Readlink(link); got != target1 {
				t.Errorf("the feed's link moved: %s → %s", target1, got)
			}
			if cur, _, _ := readFeedState(t, feedsDir); cur != cur1 {
				t.Errorf("the version in force changed: %.16s → %.16s", cur1, cur)
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(feedsDir), "x.yar")); err == nil {
				t.Error("a file was written outside the feeds directory")
			}
		})
	}
	waitDenied(t, d, "marker-one-still", "FANGUARD-FEED-MARKER-ONE", true)

	// 4. The canary holds back a rule that matches /usr/bin/ls, and the
	// rule that uses it, and names the file; the rest installs.
	canary := archiveFile{name: "reversinglabs-yara-rules-develop/yara/fanguard-test/ls.yara", data: []byte(`
rule matches_ls {
	condition: uint32(0) == 0x464c457f and filename == "ls"
}
rule uses_matches_ls {
	strings: $never = "FANGUARD-FEED-NEVER-IN-LS"
	condition: matches_ls and $never
}
rule innocent {
	strings: $m = "FANGUARD-FEED-INNOCENT"
	condition: $m
}
`)}
	v2 := zipOf(t, rlArchiveFiles(t, markerRule("TWO"), canary))
	srv.set(v2, nil, false)
	out, code = fanguard(t, "rules", "update", "--config", cfg)
	if code != 0 || !strings.Contains(out, "rl: installed version") {
		t.Fatalf("update with a rule matching ls: exit %d\n%s", code, out)
	}
	t.Logf("second version:\n%s", out)
	for _, w := range []string{"held back fanguard-test/ls.yara: matches_ls: matched a trusted file (/usr/bin/ls)",
		"held back fanguard-test/ls.yara: uses_matches_ls: uses a rule held back", "2 rules held back"} {
		if !strings.Contains(out, w) {
			t.Errorf("the update does not say %q:\n%s", w, out)
		}
	}
	installed, err := os.ReadFile(filepath.Join(link, "fanguard-test", "ls.yara"))
	if err != nil || bytes.Contains(installed, []byte("rule matches_ls")) || !bytes.Contains(installed, []byte("innocent")) {
		t.Errorf("installed ls.yara (%v):\n%s", err, installed)
	}
	waitDenied(t, d, "marker-two", "FANGUARD-FEED-MARKER-TWO", true)
	waitDenied(t, d, "innocent", "FANGUARD-FEED-INNOCENT", true)
	lsData, err := os.ReadFile("/usr/bin/ls")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(d.Dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if denied(t, d, "bin/ls", string(lsData)) {
		t.Error("a copy of ls is denied: the held-back rule is in force")
	}
	out, code = fanguard(t, "rules", "list", "--config", cfg)
	if code != 0 || !strings.Contains(out, "rl") || !strings.Contains(out, "matches_ls") {
		t.Errorf("rules list: exit %d, want the feed and its held-back rule:\n%s", code, out)
	}
	if !strings.Contains(out, "rl/fanguard-test/ls.yara") {
		t.Errorf("rules list does not name the feed's files by their path in the feed:\n%s", out)
	}
	st := statusOf(t, d)
	if len(st.Feeds) != 1 || st.Feeds[0].Version != sha256Hex(v2) || st.Feeds[0].AgeSeconds < 0 || len(st.Feeds[0].HeldBack) != 2 {
		t.Errorf("status feeds: %+v", st.Feeds)
	}
	if _, body, err := controlDo(d.Control, http.MethodGet, "/metrics"); err != nil || !strings.Contains(string(body), `fanguard_feed_age_seconds{feed="rl"}`) ||
		!strings.Contains(string(body), `fanguard_feed_stale{feed="rl"} 0`) {
		t.Errorf("/metrics has no feed age or staleness (%v)", err)
	}

	// 5. Rollback: the first version again, and the second is not
	// installed again by a plain update.
	out, code = fanguard(t, "rules", "rollback", "--config", cfg, "rl")
	if code != 0 || !strings.Contains(out, "rolled back") {
		t.Fatalf("rollback: exit %d\n%s", code, out)
	}
	if got, _ := os.Readlink(link); got != target1 {
		t.Errorf("after rollback the link is %s, want %s", got, target1)
	}
	waitDenied(t, d, "marker-two-gone", "FANGUARD-FEED-MARKER-TWO", false)
	waitDenied(t, d, "marker-one-back", "FANGUARD-FEED-MARKER-ONE", true)
	out, code = fanguard(t, "rules", "update", "--config", cfg)
	if cur, _, rejected := readFeedState(t, feedsDir); code != 0 || cur != cur1 || len(rejected) != 1 {
		t.Errorf("update after rollback: exit %d, current %.16s, rejected %v: want the first version kept\n%s", code, cur, rejected, out)
	}

	// 6. A version broken at start (a file damaged on disk): the daemon
	// falls back on the previous one, and keeps running.
	out, code = fanguard(t, "rules", "update", "--force", "--config", cfg)
	if code != 0 {
		t.Fatalf("forced update: exit %d\n%s", code, out)
	}
	waitDenied(t, d, "marker-two-forced", "FANGUARD-FEED-MARKER-TWO", true)
	if err := os.WriteFile(filepath.Join(link, "fanguard-test", "marker.yara"), []byte("rule damaged {"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.kill()
	d.restart()
	d.waitLog(10*time.Second, "rule feed broken: rolled back to its previous version")
	waitDenied(t, d, "marker-one-fallback", "FANGUARD-FEED-MARKER-ONE", true)
	if got, _ := os.Readlink(link); got != target1 {
		t.Errorf("after the fallback the link is %s, want %s", got, target1)
	}
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// feedStatus is the part of GET /status about feeds.
type feedStatus struct {
	Feeds []struct {
		Name       string   `json:"name"`
		Version    string   `json:"version"`
		AgeSeconds float64  `json:"age_seconds"`
		HeldBack   []string `json:"held_back"`
		Stale      bool     `json:"stale"`
	} `json:"feeds"`
	Health struct {
		Healthy bool   `json:"healthy"`
		Reason  string `json:"reason"`
	} `json:"health"`
}

func statusOf(t *testing.T, d *daemon) feedStatus {
	t.Helper()
	code, body, err := controlDo(d.Control, http.MethodGet, "/status")
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET /status: %d %v", code, err)
	}
	var st feedStatus
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestFeedStale: a feed configured but never installed, or not updated
// for longer than update.max_age, makes the status unhealthy, and says
// which and why.
func TestFeedStale(t *testing.T) {
	feedsDir := filepath.Join(t.TempDir(), "feeds.d")
	local := t.TempDir()
	if err := os.Mkdir(filepath.Join(local, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(local, "sub", "local.yar"), "rule local_feed { strings: $m = \"FANGUARD-LOCAL-FEED\" condition: $m }\n", 0o644)
	tables := fmt.Sprintf("[update]\ndir = %q\ncanary_files = 0\nmax_age = \"3s\"\n[[feeds]]\nname = \"local\"\nurl = %q\n", feedsDir, local)
	d := startDaemon(t, options{ruleDirs: []string{feedsDir}, tables: tables})
	st := statusOf(t, d)
	if st.Health.Healthy || !strings.Contains(st.Health.Reason, "rule feed local was never installed") {
		t.Errorf("before any update: health %+v", st.Health)
	}
	out, code := fanguard(t, "rules", "update", "--config", d.Config)
	if code != 0 {
		t.Fatalf("update of a local directory feed: exit %d\n%s", code, out)
	}
	waitDenied(t, d, "local", "FANGUARD-LOCAL-FEED", true)
	if st := statusOf(t, d); !st.Health.Healthy || len(st.Feeds) != 1 || st.Feeds[0].Stale {
		t.Errorf("after the update: %+v", st)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := statusOf(t, d)
		if !st.Health.Healthy {
			if !strings.Contains(st.Health.Reason, "rule feed local was last updated") || !st.Feeds[0].Stale {
				t.Errorf("stale feed: %+v", st)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the feed never went stale with max_age = 3s")
		}
		time.Sleep(500 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(feedsDir, "local", "sub", "local.yar")); err != nil {
		t.Errorf("local feed file: %v", err)
	}
}

// TestFeedCLI: what rules update and rollback say without a feed to work
// on, and a local feed updated and rolled back without a daemon.
func TestFeedCLI(t *testing.T) {
	work := t.TempDir()
	feedsDir := filepath.Join(work, "feeds.d")
	local := filepath.Join(work, "mirror")
	if err := os.MkdirAll(filepath.Join(local, "apt"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(local, "apt", "one.yar"), "rule one { strings: $a = \"FANGUARD-CLI-ONE\" condition: $a }\n", 0o644)
	base := fmt.Sprintf("[rules]\ndirs = [%q]\ncache_dir = \"\"\n[control]\nsocket = %q\n", feedsDir, filepath.Join(work, "none.sock"))
	noFeeds := filepath.Join(work, "nofeeds.toml")
	writeFile(t, noFeeds, base, 0o644)
	withFeed := filepath.Join(work, "feed.toml")
	writeFile(t, withFeed, base+fmt.Sprintf("[update]\ndir = %q\ncanary_files = 0\n[[feeds]]\nname = \"mirror\"\nurl = %q\n", feedsDir, local), 0o644)

	steps := []struct {
		name string
		args []string
		code int
		want string
		edit func()
	}{
		{"no feeds: nothing to do", []string{"rules", "update", "--config", noFeeds}, 0, "nothing to update", nil},
		{"unknown feed", []string{"rules", "update", "--config", withFeed, "nope"}, 2, `no feed named "nope"`, nil},
		{"rollback before any install", []string{"rules", "rollback", "--config", withFeed, "mirror"}, 1, "no previous version", nil},
		{"first install", []string{"rules", "update", "--config", withFeed}, 0, "mirror: installed version", nil},
		{"no daemon to reload", []string{"rules", "update", "--config", withFeed, "--force"}, 0, "no daemon is running", nil},
		{"unchanged", []string{"rules", "update", "--config", withFeed}, 0, "mirror: unchanged", nil},
		{"a new version", []string{"rules", "update", "--config", withFeed}, 0, "mirror: installed version", func() {
			writeFile(t, filepath.Join(local, "apt", "two.yar"), "rule two { strings: $a = \"FANGUARD-CLI-TWO\" condition: $a }\n", 0o644)
		}},
		{"list names the feed", []string{"rules", "list", "--config", withFeed}, 0, "mirror/apt/two.yar", nil},
		{"rollback", []string{"rules", "rollback", "--config", withFeed, "mirror"}, 0, "mirror: rolled back to version", nil},
		{"list after rollback", []string{"rules", "list", "--config", withFeed}, 0, "mirror/apt/one.yar", nil},
		{"rolled-back version not reinstalled", []string{"rules", "update", "--config", withFeed}, 0, "was rolled back from", nil},
	}
	for _, s := range steps {
		if s.edit != nil {
			s.edit()
		}
		out, code := fanguard(t, s.args...)
		if code != s.code || !strings.Contains(out, s.want) {
			t.Errorf("%s: fanguard %s: exit %d, want %d and %q:\n%s", s.name, strings.Join(s.args, " "), code, s.code, s.want, out)
		}
	}
	out, _ := fanguard(t, "rules", "list", "--config", withFeed)
	if strings.Contains(out, "mirror/apt/two.yar") {
		t.Errorf("after the rollback two.yar still loads:\n%s", out)
	}
}

package feeds

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// feedServer serves body over TLS at /feed.tar.gz with an ETag and a
// Last-Modified, answering conditional requests with 304. It counts the
// full downloads.
type feedServer struct {
	*httptest.Server
	caFile    string
	body      []byte
	etag      string
	modified  time.Time
	downloads atomic.Int32
	userAgent atomic.Value
}

func newFeedServer(t *testing.T, body []byte, extra http.Handler) *feedServer {
	t.Helper()
	s := &feedServer{body: body, etag: `"v1"`, modified: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
	mux := http.NewServeMux()
	mux.HandleFunc("/feed.tar.gz", func(w http.ResponseWriter, r *http.Request) {
		s.userAgent.Store(r.UserAgent())
		w.Header().Set("ETag", s.etag)
		w.Header().Set("Last-Modified", s.modified.Format(http.TimeFormat))
		if inm := r.Header.Get("If-None-Match"); inm != "" {
			if inm == s.etag {
				w.WriteHeader(http.StatusNotModified)
				return
			}
		} else if ims, err := http.ParseTime(r.Header.Get("If-Modified-Since")); err == nil && !s.modified.After(ims) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		s.downloads.Add(1)
		w.Header().Set("Content-Length", strconv.Itoa(len(s.body)))
		w.Write(s.body)
	})
	if extra != nil {
		mux.Handle("/", extra)
	}
	s.Server = httptest.NewTLSServer(mux)
	t.Cleanup(s.Close)
	s.caFile = filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
	if err := os.WriteFile(s.caFile, pemBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestFetchConditional(t *testing.T) {
	body := tarGz(t, filterMembers)
	s := newFeedServer(t, body, nil)
	dir := t.TempDir()
	opts := FetchOptions{URL: s.URL + "/feed.tar.gz", CAFile: s.caFile, Dir: dir}
	got, err := Fetch(context.Background(), opts)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	sum := sha256.Sum256(body)
	if got.SHA256 != hex.EncodeToString(sum[:]) || got.Size != int64(len(body)) || got.NotModified {
		t.Errorf("Fetch = %+v, want sha256 %x, size %d", got, sum, len(body))
	}
	if got.ETag != s.etag || got.LastModified != s.modified.Format(http.TimeFormat) {
		t.Errorf("ETag %q, Last-Modified %q, want %q, %q", got.ETag, got.LastModified, s.etag, s.modified.Format(http.TimeFormat))
	}
	if filepath.Dir(got.Path) != dir || !strings.HasPrefix(filepath.Base(got.Path), ".download-") {
		t.Errorf("Path %s, want a .download-* file in %s", got.Path, dir)
	}
	if b, err := os.ReadFile(got.Path); err != nil || string(b) != string(body) {
		t.Errorf("the downloaded file does not hold the body (%v)", err)
	}
	if ua := s.userAgent.Load(); ua != "fanguard" {
		t.Errorf("User-Agent %q, want fanguard", ua)
	}
	// The downloaded file unpacks.
	if _, err := Unpack(got.Path, filepath.Join(t.TempDir(), "out"), UnpackOptions{}); err != nil {
		t.Errorf("Unpack of the download: %v", err)
	}
	os.Remove(got.Path)

	for _, tc := range []struct {
		name string
		opts FetchOptions
	}{
		{"If-None-Match", FetchOptions{ETag: got.ETag}},
		{"If-Modified-Since", FetchOptions{LastModified: got.LastModified}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.opts
			o.URL, o.CAFile, o.Dir = opts.URL, opts.CAFile, dir
			again, err := Fetch(context.Background(), o)
			if err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			want := Fetched{ETag: got.ETag, LastModified: got.LastModified, NotModified: true}
			if again != want {
				t.Errorf("Fetch = %+v, want %+v", again, want)
			}
			if n := s.downloads.Load(); n != 1 {
				t.Errorf("the server sent the body %d times, want once", n)
			}
			checkOnly(t, dir)
		})
	}
	// A changed feed is downloaded again.
	s.etag = `"v2"`
	s.modified = s.modified.Add(time.Hour)
	if got, err := Fetch(context.Background(), FetchOptions{URL: opts.URL, CAFile: s.caFile, Dir: dir, ETag: `"v1"`}); err != nil || got.NotModified || got.ETag != `"v2"` {
		t.Errorf("Fetch of a changed feed = %+v, %v; want a download with ETag \"v2\"", got, err)
	} else {
		os.Remove(got.Path)
	}
}

func TestFetchErrors(t *testing.T) {
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("the plain-HTTP server got a request for %s", r.URL)
	}))
	defer plain.Close()
	big := make([]byte, 4000)
	extra := http.NewServeMux()
	extra.HandleFunc("/missing", http.NotFound)
	extra.HandleFunc("/truncated", func(w http.ResponseWriter, r *http.Request) {
		conn, bufw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijacking: %v", err)
			return
		}
		defer conn.Close()
		fmt.Fprintf(bufw, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: application/gzip\r\n\r\n", len(big))
		bufw.Write(big[:1000])
		bufw.Flush()
	})
	extra.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(big)))
		w.Write(big)
	})
	extra.HandleFunc("/big-chunked", func(w http.ResponseWriter, r *http.Request) {
		for range 4 {
			w.Write(big[:1000])
			http.NewResponseController(w).Flush()
		}
	})
	extra.HandleFunc("/to-http", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.URL+"/feed.tar.gz", http.StatusFound)
	})
	extra.HandleFunc("/to-https", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/feed.tar.gz", http.StatusMovedPermanently)
	})
	extra.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/loop", http.StatusFound)
	})
	extra.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.Write([]byte("x"))
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
	})
	s := newFeedServer(t, []byte("feed"), extra)
	badCA := writeTemp(t, t.TempDir(), "bad.pem", []byte("not a certificate\n"))

	cases := []struct {
		name    string
		opts    FetchOptions
		wantIs  error
		wantAs  any
		wantIn  string
		anyFile bool // a download is expected (redirect that works)
	}{
		{name: "ok after https redirect", opts: FetchOptions{URL: s.URL + "/to-https"}, anyFile: true},
		{name: "unknown authority", opts: FetchOptions{URL: s.URL + "/feed.tar.gz", CAFile: "-"}, wantAs: &x509.UnknownAuthorityError{}, wantIn: "/feed.tar.gz"},
		{name: "CA file without certificates", opts: FetchOptions{URL: s.URL + "/feed.tar.gz", CAFile: badCA}, wantIn: "no PEM certificate"},
		{name: "http URL", opts: FetchOptions{URL: plain.URL + "/feed.tar.gz"}, wantIn: plain.URL + "/feed.tar.gz: only https://"},
		{name: "redirect to http", opts: FetchOptions{URL: s.URL + "/to-http"}, wantIn: "from https to http://"},
		{name: "redirect loop", opts: FetchOptions{URL: s.URL + "/loop"}, wantIn: "more than 10 redirects"},
		{name: "not found", opts: FetchOptions{URL: s.URL + "/missing"}, wantIn: "/missing: server answered 404 Not Found"},
		{name: "truncated", opts: FetchOptions{URL: s.URL + "/truncated"}, wantIs: io.ErrUnexpectedEOF, wantIn: "after 1000 bytes"},
		{name: "too large, Content-Length", opts: FetchOptions{URL: s.URL + "/big", MaxSize: 3000}, wantIs: ErrTooLarge, wantIn: "Content-Length is 4000"},
		{name: "too large, chunked", opts: FetchOptions{URL: s.URL + "/big-chunked", MaxSize: 3000}, wantIs: ErrTooLarge, wantIn: "more than 3000 bytes"},
		{name: "timeout", opts: FetchOptions{URL: s.URL + "/slow", Timeout: 300 * time.Millisecond}, wantIs: context.DeadlineExceeded},
		{name: "credentials hidden", opts: FetchOptions{URL: "https://user:secret@" + strings.TrimPrefix(s.URL, "https://") + "/missing"}, wantIn: "user:xxxxx@"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := tc.opts
			opts.Dir = dir
			switch opts.CAFile {
			case "-":
				opts.CAFile = ""
			case "":
				opts.CAFile = s.caFile
			}
			got, err := Fetch(context.Background(), opts)
			if tc.anyFile {
				if err != nil || got.Size != 4 {
					t.Fatalf("Fetch = %+v, %v; want the 4-byte feed", got, err)
				}
				os.Remove(got.Path)
				return
			}
			if err == nil {
				os.Remove(got.Path)
				t.Fatalf("Fetch = %+v, want an error", got)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("error %v is not %v", err, tc.wantIs)
			}
			if tc.wantAs != nil && !errors.As(err, tc.wantAs) {
				t.Errorf("error %v is not a %T", err, tc.wantAs)
			}
			if !strings.Contains(err.Error(), tc.wantIn) {
				t.Errorf("error %q does not say %q", err, tc.wantIn)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error %q shows the password", err)
			}
			checkOnly(t, dir)
		})
	}
}

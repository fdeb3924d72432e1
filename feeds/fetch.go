package feeds

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"
)

// Defaults of FetchOptions.
const (
	DefaultMaxDownload = 256 << 20
	DefaultTimeout     = 10 * time.Minute
	DefaultUserAgent   = "fanguard"
	maxRedirects       = 10
)

// ErrTooLarge is wrapped by Fetch's error when the body is larger than
// FetchOptions.MaxSize, whether the server said so in Content-Length or
// sent more than that.
var ErrTooLarge = errors.New("download larger than the size limit")

// FetchOptions says what Fetch downloads. Zero values mean the defaults
// noted. Fetch only reads it: one value may be shared by concurrent calls.
type FetchOptions struct {
	// URL is the feed's address; it must be https://.
	URL string
	// CAFile is a PEM file of CA certificates trusted besides the system's
	// roots (an internal mirror's CA). "" means the system's roots only.
	CAFile string
	// MaxSize bounds the body in bytes; a larger body is an error wrapping
	// ErrTooLarge. 0 means DefaultMaxDownload (256 MiB).
	MaxSize int64
	// Timeout bounds the whole request, the body included. 0 means
	// DefaultTimeout (10 minutes).
	Timeout time.Duration
	// ETag is the entity tag of the last fetch, sent as If-None-Match.
	ETag string
	// LastModified is the Last-Modified of the last fetch, sent as
	// If-Modified-Since.
	LastModified string
	// Dir is where the body's temporary file is made ("" means
	// os.TempDir()). Put it on the file system the feed is unpacked to.
	Dir string
	// UserAgent is sent as User-Agent; "" means DefaultUserAgent.
	UserAgent string
}

// Fetched is what Fetch downloaded. It is a plain value, owned by the
// caller (who also owns the file at Path).
type Fetched struct {
	// Path is the temporary file holding the body; the caller removes it.
	// It is "" when NotModified.
	Path string
	// Size is the body's length in bytes.
	Size int64
	// SHA256 is the lowercase hex SHA-256 of the body.
	SHA256 string
	// ETag is the response's entity tag (the request's when NotModified
	// and the server sent none).
	ETag string
	// LastModified is the response's Last-Modified (the request's when
	// NotModified and the server sent none).
	LastModified string
	// NotModified says the server answered 304 Not Modified: nothing was
	// downloaded.
	NotModified bool
}

// Fetch downloads opts.URL into a new temporary file in opts.Dir and
// returns its path, size and SHA-256. The request is conditional when
// opts.ETag or opts.LastModified is set, and a 304 answer returns
// NotModified without a file. TLS is always verified, against the system's
// roots and opts.CAFile; redirects are followed up to 10 times, never from
// https to anything else. A status other than 2xx or 304 is an error
// naming the URL and the status. A body larger than opts.MaxSize is an
// error wrapping ErrTooLarge, and a body shorter than its Content-Length
// is an error. On any error no temporary file is left.
//
// Fetch is safe for concurrent use.
func Fetch(ctx context.Context, opts FetchOptions) (Fetched, error) {
	u, err := url.Parse(opts.URL)
	if err != nil {
		return Fetched{}, fmt.Errorf("parsing feed URL %q: %w", opts.URL, err)
	}
	shown := u.Redacted()
	if u.Scheme != "https" || u.Host == "" {
		return Fetched{}, fmt.Errorf("fetching %s: only https:// URLs are allowed", shown)
	}
	client, err := newClient(opts.CAFile)
	if err != nil {
		return Fetched{}, fmt.Errorf("fetching %s: %w", shown, err)
	}
	defer client.CloseIdleConnections()
	maxSize := opts.MaxSize
	if maxSize <= 0 {
		maxSize = DefaultMaxDownload
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return Fetched{}, fmt.Errorf("fetching %s: %w", shown, err)
	}
	ua := opts.UserAgent
	if ua == "" {
		ua = DefaultUserAgent
	}
	req.Header.Set("User-Agent", ua)
	if opts.ETag != "" {
		req.Header.Set("If-None-Match", opts.ETag)
	}
	if opts.LastModified != "" {
		req.Header.Set("If-Modified-Since", opts.LastModified)
	}
	resp, err := client.Do(req)
	if err != nil {
		return Fetched{}, fmt.Errorf("fetching %s: %w", shown, err)
	}
	defer resp.Body.Close()

	got := Fetched{ETag: resp.Header.Get("ETag"), LastModified: resp.Header.Get("Last-Modified")}
	if resp.StatusCode == http.StatusNotModified {
		if got.ETag == "" {
			got.ETag = opts.ETag
		}
		if got.LastModified == "" {
			got.LastModified = opts.LastModified
		}
		got.NotModified = true
		return got, nil
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return Fetched{}, fmt.Errorf("fetching %s: server answered %s", shown, resp.Status)
	}
	if resp.ContentLength > maxSize {
		return Fetched{}, fmt.Errorf("fetching %s: %w: Content-Length is %d bytes, the limit %d",
			shown, ErrTooLarge, resp.ContentLength, maxSize)
	}

	f, err := os.CreateTemp(opts.Dir, ".download-*")
	if err != nil {
		return Fetched{}, fmt.Errorf("fetching %s: %w", shown, err)
	}
	done := false
	defer func() {
		if !done {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(resp.Body, maxSize+1))
	if err != nil {
		return Fetched{}, fmt.Errorf("fetching %s: reading the body after %d bytes: %w", shown, n, err)
	}
	if n > maxSize {
		return Fetched{}, fmt.Errorf("fetching %s: %w: more than %d bytes sent", shown, ErrTooLarge, maxSize)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		// net/http reports a short body as io.ErrUnexpectedEOF; this is
		// the backstop should a transport ever not.
		return Fetched{}, fmt.Errorf("fetching %s: body is %d bytes, Content-Length said %d: %w",
			shown, n, resp.ContentLength, io.ErrUnexpectedEOF)
	}
	if err := f.Sync(); err != nil {
		return Fetched{}, fmt.Errorf("fetching %s: syncing %s: %w", shown, f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return Fetched{}, fmt.Errorf("fetching %s: closing %s: %w", shown, f.Name(), err)
	}
	done = true
	got.Path = f.Name()
	got.Size = n
	got.SHA256 = hex.EncodeToString(h.Sum(nil))
	return got, nil
}

// newClient makes the HTTP client of one Fetch: TLS 1.2 or later against
// the system's roots plus the certificates of caFile, no transparent
// decompression (the digest is of the bytes as served), and redirects only
// to https.
func newClient(caFile string) (*http.Client, error) {
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("reading CA file: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("reading CA file %s: no PEM certificate in it", caFile)
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	tr.DisableCompression = true
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= maxRedirects {
				return fmt.Errorf("more than %d redirects", maxRedirects)
			}
			if req.URL.Scheme != "https" {
				return fmt.Errorf("refusing a redirect from https to %s", req.URL.Redacted())
			}
			return nil
		},
	}, nil
}

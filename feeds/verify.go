package feeds

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"aead.dev/minisign"
)

// ErrBadSignature is wrapped by VerifyMinisign's error when a well-formed
// signature does not verify the file with the key.
var ErrBadSignature = errors.New("signature does not verify")

// ErrDigestMismatch is wrapped by VerifySHA256's error when the digests
// differ.
var ErrDigestMismatch = errors.New("sha256 does not match")

// VerifySHA256 compares the lowercase hex digest got (as Fetched.SHA256
// gives it) with the pinned digest want. An empty want means nothing to
// check. Case and surrounding space in want are ignored. A mismatch returns
// an error wrapping ErrDigestMismatch that shows both digests.
func VerifySHA256(got, want string) error {
	want = strings.ToLower(strings.TrimSpace(want))
	if want == "" {
		return nil
	}
	if len(want) != 64 || strings.Trim(want, "0123456789abcdef") != "" {
		return fmt.Errorf("checking sha256: pinned digest %q is not 64 hexadecimal digits", want)
	}
	if subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
		return fmt.Errorf("checking sha256: %w: got %s, want %s", ErrDigestMismatch, got, want)
	}
	return nil
}

// VerifyMinisign checks that signature, the content of a minisign .minisig
// file, is a signature of the file at path file by publicKey. publicKey is
// the key as the second line of a minisign .pub file gives it ("RWQ..."),
// or the whole .pub file. Both the prehashed signatures minisign makes by
// default and legacy ones (minisign -l) are accepted; the trusted comment
// is verified too.
//
// A malformed key or signature gives an error saying which; a signature
// that does not verify gives an error wrapping ErrBadSignature, which says
// so when the signature was made by another key.
func VerifyMinisign(publicKey string, file string, signature []byte) error {
	var key minisign.PublicKey
	if err := key.UnmarshalText([]byte(strings.TrimSpace(publicKey))); err != nil {
		return fmt.Errorf("parsing minisign public key %q: %w", abbreviate(publicKey), err)
	}
	signature = bytes.TrimSpace(signature)
	var sig minisign.Signature
	if err := sig.UnmarshalText(signature); err != nil {
		return fmt.Errorf("parsing minisign signature of %s: %w", file, err)
	}
	if sig.KeyID != key.ID() {
		return fmt.Errorf("verifying %s: %w: it was made by key %s, the configured key is %s",
			file, ErrBadSignature, keyID(sig.KeyID), keyID(key.ID()))
	}
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("verifying %s: %w", file, err)
	}
	defer f.Close()
	var ok bool
	if sig.Algorithm == minisign.HashEdDSA {
		r := minisign.NewReader(f)
		if _, err := io.Copy(io.Discard, r); err != nil {
			return fmt.Errorf("verifying %s: reading: %w", file, err)
		}
		ok = r.Verify(key, signature)
	} else {
		// A legacy signature signs the message itself, not its digest.
		message, err := io.ReadAll(f)
		if err != nil {
			return fmt.Errorf("verifying %s: reading: %w", file, err)
		}
		ok = minisign.Verify(key, message, signature)
	}
	if !ok {
		return fmt.Errorf("verifying %s with minisign key %s: %w (the file or its trusted comment was changed after signing)",
			file, keyID(key.ID()), ErrBadSignature)
	}
	return nil
}

// keyID formats a minisign key ID as minisign prints it.
func keyID(id uint64) string {
	return strings.ToUpper(strconv.FormatUint(id, 16))
}

// abbreviate shortens s for an error message.
func abbreviate(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}

package feeds

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"aead.dev/minisign"
)

func TestVerifySHA256(t *testing.T) {
	const sum = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	cases := []struct {
		name, got, want string
		wantErr         string // "" for no error
	}{
		{"nothing pinned", sum, "", ""},
		{"equal", sum, sum, ""},
		{"pinned in upper case with space", sum, " " + strings.ToUpper(sum) + "\n", ""},
		{"mismatch", sum, strings.Repeat("0", 64), "got " + sum + ", want " + strings.Repeat("0", 64)},
		{"malformed pin", sum, "abc", "not 64 hexadecimal digits"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifySHA256(tc.got, tc.want)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("VerifySHA256: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("VerifySHA256: got error %v, want one saying %q", err, tc.wantErr)
			}
		})
	}
	if err := VerifySHA256(sum, strings.Repeat("1", 64)); !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("a mismatch gives %v, not ErrDigestMismatch", err)
	}
}

func TestVerifyMinisign(t *testing.T) {
	pub, priv, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherPub, otherPriv, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	content := tarGz(t, filterMembers)
	file := writeTemp(t, dir, "feed.tar.gz", content)
	tampered := bytes.Clone(content)
	tampered[len(tampered)/2] ^= 1
	tamperedFile := writeTemp(t, dir, "tampered.tar.gz", tampered)

	// minisign's default: the file's BLAKE2b digest is signed.
	r := minisign.NewReader(bytes.NewReader(content))
	r.Read(make([]byte, len(content)+1))
	hashed := r.Sign(priv)
	legacy := minisign.Sign(priv, content)
	byOther := minisign.Sign(otherPriv, content)
	pubFile, _ := pub.MarshalText()
	// The trusted comment is signed too.
	forgedComment := bytes.Replace(hashed, []byte("trusted comment: timestamp:"), []byte("trusted comment: timestamp:9"), 1)

	cases := []struct {
		name      string
		key       string
		file      string
		signature []byte
		wantIs    error
		wantIn    string // "" for success
	}{
		{"prehashed", pub.String(), file, hashed, nil, ""},
		{"legacy", pub.String(), file, legacy, nil, ""},
		{"whole .pub file", string(pubFile) + "\n", file, hashed, nil, ""},
		{"tampered file", pub.String(), tamperedFile, hashed, ErrBadSignature, "signature does not verify"},
		{"tampered file, legacy", pub.String(), tamperedFile, legacy, ErrBadSignature, "signature does not verify"},
		{"forged trusted comment", pub.String(), file, forgedComment, ErrBadSignature, "signature does not verify"},
		{"another key's signature", pub.String(), file, byOther, ErrBadSignature, "made by key " + keyID(otherPub.ID())},
		{"malformed key", "RWQnot-a-key", file, hashed, nil, `parsing minisign public key "RWQnot-a-key"`},
		{"empty key", "", file, hashed, nil, "parsing minisign public key"},
		{"malformed signature", pub.String(), file, []byte("untrusted comment: x\nbm90IGEgc2lnbmF0dXJl\n"), nil, "parsing minisign signature of " + file},
		{"signature is not minisign", pub.String(), file, []byte("-----BEGIN PGP SIGNATURE-----\n"), nil, "parsing minisign signature"},
		{"missing file", pub.String(), filepath.Join(dir, "missing"), hashed, os.ErrNotExist, "missing"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyMinisign(tc.key, tc.file, tc.signature)
			if tc.wantIn == "" {
				if err != nil {
					t.Fatalf("VerifyMinisign: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("VerifyMinisign: no error")
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("error %v is not %v", err, tc.wantIs)
			}
			if !strings.Contains(err.Error(), tc.wantIn) {
				t.Errorf("error %q does not say %q", err, tc.wantIn)
			}
		})
	}
}

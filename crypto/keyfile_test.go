package crypto

import (
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func fileMode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestPrivateKeyFileRoundTripAndMode0600(t *testing.T) {
	for _, name := range Schemes() {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			k := testKey(t, name, "file")
			path := filepath.Join(dir, "node.key")
			if err := WritePrivateKeyFile(path, k); err != nil {
				t.Fatal(err)
			}
			if m := fileMode(t, path); m != 0o600 {
				t.Fatalf("private key file mode = %04o, want 0600", m)
			}
			got, err := ReadPrivateKeyFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if got.Scheme() != k.Scheme() || !got.Public().Equal(k.Public()) || string(got.Bytes()) != string(k.Bytes()) {
				t.Fatal("round trip changed the private key")
			}
			if _, err := ReadPrivateKeyFileScheme(path, strings.ToUpper(name)); err != nil {
				t.Fatalf("ReadPrivateKeyFileScheme with the file's own scheme: %v", err)
			}

			// The PEM block is as documented.
			data, _ := os.ReadFile(path)
			block, _ := pem.Decode(data)
			if block == nil || block.Type != "PBFT PRIVATE KEY" || block.Headers["Scheme"] != name {
				t.Fatalf("unexpected PEM block: %+v", block)
			}

			// Overwriting an existing, world-readable file tightens its mode
			// and truncates it.
			if err := os.WriteFile(path, []byte(strings.Repeat("x", 20000)), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := WritePrivateKeyFile(path, k); err != nil {
				t.Fatal(err)
			}
			if m := fileMode(t, path); m != 0o600 {
				t.Fatalf("rewritten private key file mode = %04o, want 0600", m)
			}
			if _, err := ReadPrivateKeyFile(path); err != nil {
				t.Fatalf("rewritten file: %v", err)
			}

			pubPath := filepath.Join(dir, "node.pub")
			if err := WritePublicKeyFile(pubPath, k.Public()); err != nil {
				t.Fatal(err)
			}
			if m := fileMode(t, pubPath); m != 0o644 {
				t.Fatalf("public key file mode = %04o, want 0644", m)
			}
			pub, err := ReadPublicKeyFile(pubPath)
			if err != nil {
				t.Fatal(err)
			}
			if !pub.Equal(k.Public()) {
				t.Fatal("round trip changed the public key")
			}
		})
	}
}

func TestLoadingMissingCorruptOrWrongSchemeKeyFileNamesTheFile(t *testing.T) {
	dir := t.TempDir()
	ed := testKey(t, "Ed25519", "ed")
	ml := testKey(t, "ML-DSA-44", "ml")

	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pemFile := func(name, typ string, headers map[string]string, body []byte) string {
		return write(name, pem.EncodeToMemory(&pem.Block{Type: typ, Headers: headers, Bytes: body}))
	}
	scheme := func(s string) map[string]string { return map[string]string{"Scheme": s} }

	mlPath := filepath.Join(dir, "ml.key")
	if err := WritePrivateKeyFile(mlPath, ml); err != nil {
		t.Fatal(err)
	}
	edPub := filepath.Join(dir, "ed.pub")
	if err := WritePublicKeyFile(edPub, ed.Public()); err != nil {
		t.Fatal(err)
	}
	corrupt := ed.Bytes()
	copy(corrupt[32:], testKey(t, "Ed25519", "other").Public().Bytes())

	type load func(path string) error
	readPriv := func(p string) error { _, err := ReadPrivateKeyFile(p); return err }
	readPub := func(p string) error { _, err := ReadPublicKeyFile(p); return err }
	wantEd := func(p string) error { _, err := ReadPrivateKeyFileScheme(p, "Ed25519"); return err }

	cases := []struct {
		name string
		path string
		load load
		want string // substring of the error besides the path
	}{
		{"missing private", filepath.Join(dir, "missing.key"), readPriv, "no such file"},
		{"missing public", filepath.Join(dir, "missing.pub"), readPub, "no such file"},
		{"empty", write("empty.key", nil), readPriv, "not a PEM file"},
		{"not PEM", write("garbage.key", []byte("hello\n")), readPriv, "not a PEM file"},
		{"public as private", edPub, readPriv, `"PBFT PUBLIC KEY", want "PBFT PRIVATE KEY"`},
		{"foreign block type", pemFile("rsa.key", "RSA PRIVATE KEY", scheme("Ed25519"), ed.Bytes()), readPriv, `"RSA PRIVATE KEY"`},
		{"missing header", pemFile("nohdr.key", "PBFT PRIVATE KEY", nil, ed.Bytes()), readPriv, `missing "Scheme"`},
		{"unknown scheme", pemFile("rsa2.key", "PBFT PRIVATE KEY", scheme("RSA"), ed.Bytes()), readPriv, `unknown signature scheme "RSA"`},
		{"truncated key", pemFile("short.key", "PBFT PRIVATE KEY", scheme("Ed25519"), ed.Bytes()[:20]), readPriv, "invalid Ed25519 private key"},
		{"inconsistent key", pemFile("bad.key", "PBFT PRIVATE KEY", scheme("Ed25519"), corrupt), readPriv, "invalid Ed25519 private key"},
		{"key of other scheme", pemFile("mix.key", "PBFT PRIVATE KEY", scheme("ML-DSA-44"), ed.Bytes()), readPriv, "invalid ML-DSA-44 private key"},
		{"truncated public", pemFile("short.pub", "PBFT PUBLIC KEY", scheme("Ed25519"), ed.Public().Bytes()[:5]), readPub, "invalid Ed25519 public key"},
		{"two blocks", write("two.key", append(mustRead(t, mlPath), mustRead(t, mlPath)...)), readPriv, "unexpected data"},
		{"wrong scheme", mlPath, wantEd, "scheme is ML-DSA-44, config wants Ed25519"},
		{"config wants unknown", mlPath, func(p string) error { _, err := ReadPrivateKeyFileScheme(p, "RSA"); return err }, `unknown signature scheme "RSA"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.load(c.path)
			if err == nil {
				t.Fatal("loading succeeded")
			}
			msg := err.Error()
			if !strings.Contains(msg, "key file "+c.path) {
				t.Errorf("error %q does not name the file %s", msg, c.path)
			}
			if !strings.Contains(msg, c.want) {
				t.Errorf("error %q does not say %q", msg, c.want)
			}
		})
	}
	if err := readPriv(filepath.Join(dir, "missing.key")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file error %v does not wrap fs.ErrNotExist", err)
	}
}

func TestWritingKeyFileToBadPathNamesTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no-such-dir", "node.key")
	err := WritePrivateKeyFile(path, testKey(t, "Ed25519", "w"))
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("error %v does not name %s", err, path)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A private key file anybody but its owner may read (or change) is refused, naming the
// file, its mode and the command that fixes it; a public key file stays 0644.
func TestPrivateKeyReadableByOthersIsRefused(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "node.key")
	k := testKey(t, "Ed25519", "mode")
	if err := WritePrivateKeyFile(path, k); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		mode fs.FileMode
		want string // "" means accepted
	}{
		{0o600, ""},
		{0o400, ""},
		{0o644, "readable by group or others (mode 0644)"},
		{0o640, "readable by group or others (mode 0640)"},
		{0o604, "readable by group or others (mode 0604)"},
		{0o620, "accessible by group or others (mode 0620)"},
		{0o602, "accessible by group or others (mode 0602)"},
	} {
		if err := os.Chmod(path, c.mode); err != nil {
			t.Fatal(err)
		}
		for name, load := range map[string]func() error{
			"ReadPrivateKeyFile":       func() error { _, err := ReadPrivateKeyFile(path); return err },
			"ReadPrivateKeyFileScheme": func() error { _, err := ReadPrivateKeyFileScheme(path, "Ed25519"); return err },
		} {
			err := load()
			if c.want == "" {
				if err != nil {
					t.Errorf("%s with mode %04o: %v", name, c.mode, err)
				}
				continue
			}
			if err == nil {
				t.Errorf("%s with mode %04o: accepted", name, c.mode)
				continue
			}
			for _, w := range []string{"key file " + path + ":", c.want, "run: chmod 600 " + path} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s with mode %04o: error %q lacks %q", name, c.mode, err, w)
				}
			}
		}
	}
	pub := filepath.Join(dir, "node.pub")
	if err := WritePublicKeyFile(pub, k.Public()); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPublicKeyFile(pub); err != nil {
		t.Fatalf("public key file of mode 0644: %v", err)
	}
}

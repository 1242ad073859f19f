package cluster

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// generated writes a fresh 4-replica cluster and returns its directory, path and file.
func generated(t *testing.T, scheme string) (string, string, *File) {
	t.Helper()
	dir := t.TempDir()
	path, err := Generate(dir, GenerateOptions{Replicas: 4, Clients: 2, Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f File
	if err := yaml.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	return dir, path, &f
}

func TestGeneratedClusterLoadsAndEveryKeyMatchesItsPeerID(t *testing.T) {
	for _, scheme := range []string{"Ed25519", "ML-DSA-44"} {
		t.Run(scheme, func(t *testing.T) {
			_, path, _ := generated(t, scheme)
			c, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Replicas) != 4 || c.F != 1 || len(c.Clients) != 2 || c.Scheme.Name() != scheme {
				t.Fatalf("loaded %d replicas f=%d %d clients %s", len(c.Replicas), c.F, len(c.Clients), c.Scheme.Name())
			}
			for i := range c.Replicas {
				if _, err := c.LoadKey(&c.Replicas[i]); err != nil {
					t.Fatal(err)
				}
			}
			for i := range c.Clients {
				if _, err := c.LoadKey(&c.Clients[i]); err != nil {
					t.Fatal(err)
				}
			}
			st, err := os.Stat(c.Replicas[0].KeyFile)
			if err != nil || st.Mode().Perm() != 0o600 {
				t.Fatalf("key file mode %v, %v: want 0600", st.Mode().Perm(), err)
			}
		})
	}
}

func TestGenerateRefusesToOverwriteACluster(t *testing.T) {
	dir, _, _ := generated(t, "Ed25519")
	if _, err := Generate(dir, GenerateOptions{Replicas: 4}); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second generate in the same directory: %v", err)
	}
}

// A broken cluster.yaml is refused with an error naming the file and the field.
func TestBrokenConfigIsRejectedNamingFileAndField(t *testing.T) {
	_, _, good := generated(t, "Ed25519")
	cases := []struct {
		name   string
		edit   func(f *File) string // returns the YAML to write (from f unless overridden)
		expect []string
	}{
		{"n below 3f+1", func(f *File) string { f.Replicas = f.Replicas[:3]; return "" }, []string{"replicas", "at least 4"}},
		{"duplicate id", func(f *File) string { f.Replicas[2].ID = 1; return "" }, []string{"replicas[2].id", "duplicate id 1"}},
		{"id out of range", func(f *File) string { f.Replicas[3].ID = 9; return "" }, []string{"replicas[3].id", "out of range"}},
		{"bad address", func(f *File) string { f.Replicas[1].Address = "127.0.0.1:7001"; return "" }, []string{"replicas[1].address", "not a multiaddr"}},
		{"missing address", func(f *File) string { f.Replicas[0].Address = ""; return "" }, []string{"replicas[0].address", "missing"}},
		{"peer id of another key", func(f *File) string { f.Replicas[0].PeerID = f.Replicas[1].PeerID; return "" }, []string{"replicas[0].peer_id", "does not match public_key"}},
		{"bad public key", func(f *File) string { f.Clients[0].PublicKey = "Ed25519:!!"; return "" }, []string{"clients[0].public_key", "base64"}},
		{"unknown scheme", func(f *File) string { f.Scheme = "RSA"; return "" }, []string{"scheme"}},
		{"client id 0", func(f *File) string { f.Clients[0].ID = 0; return "" }, []string{"clients[0].id"}},
		{"bad tick", func(f *File) string { f.Protocol.Tick = "soon"; return "" }, []string{"protocol.tick"}},
		{"window not a multiple of the interval", func(f *File) string { f.Protocol.LogWindow = 100; return "" }, []string{"protocol"}},
		{"unknown field", func(f *File) string {
			b, _ := yaml.Marshal(f)
			return strings.Replace(string(b), "cluster:", "clutser_name: x\ncluster:", 1)
		}, []string{"unknown field \"clutser_name\"", "line 1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw, _ := yaml.Marshal(good)
			var f File
			if err := yaml.Unmarshal(raw, &f); err != nil {
				t.Fatal(err)
			}
			text := tc.edit(&f)
			if text == "" {
				b, _ := yaml.Marshal(&f)
				text = string(b)
			}
			path := filepath.Join(t.TempDir(), "broken.yaml")
			if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path)
			if err == nil {
				t.Fatalf("loaded a config with %s", tc.name)
			}
			for _, want := range append([]string{path}, tc.expect...) {
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("error %q does not mention %q", err, want)
				}
			}
		})
	}
}

func TestMissingConfigFileIsNamed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.yaml")
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestKeyFileNotMatchingTheConfigIsRejected(t *testing.T) {
	dir, path, _ := generated(t, "Ed25519")
	// Swap replica 0's key file for replica 1's.
	k1, err := os.ReadFile(filepath.Join(dir, "replica-1.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "replica-0.key"), k1, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.LoadKey(&c.Replicas[0])
	if err == nil || !strings.Contains(err.Error(), "replicas[0].public_key") || !strings.Contains(err.Error(), path) {
		t.Fatalf("swapped key file: %v", err)
	}
	if err := os.Remove(filepath.Join(dir, "replica-2.key")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.LoadKey(&c.Replicas[2]); err == nil || !strings.Contains(err.Error(), "replicas[2].key_file") {
		t.Fatalf("missing key file: %v", err)
	}
}

// Frames must carry the largest message the settings allow: init sizes them for the
// scheme, and a config whose NEW-VIEW could not be sent is refused.
func TestFrameSizeCarriesTheWorstCaseNewView(t *testing.T) {
	_, path, f := generated(t, "ML-DSA-44")
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	need, what := WorstCaseFrame(c.Scheme, 4, c.Protocol)
	if c.Protocol.MaxFrameBytes < need || what != "a NEW-VIEW" {
		t.Fatalf("ML-DSA-44 cluster frames %d bytes, %s needs %d", c.Protocol.MaxFrameBytes, what, need)
	}
	if lim := c.Limits(); lim.MaxMessageBytes < c.Protocol.MaxFrameBytes || lim.MaxPrepared < int(c.Protocol.LogWindow) {
		t.Fatalf("limits %+v do not admit the frames the settings allow", lim)
	}
	f.Protocol.MaxFrameBytes = 4 << 20
	raw, _ := yaml.Marshal(f)
	small := filepath.Join(t.TempDir(), "small.yaml")
	os.WriteFile(small, raw, 0o644)
	if _, err := Load(small); err == nil || !strings.Contains(err.Error(), "protocol.max_frame_bytes") || !strings.Contains(err.Error(), "NEW-VIEW") {
		t.Fatalf("4 MiB frames with ML-DSA-44 and a 256 window: %v", err)
	}
}

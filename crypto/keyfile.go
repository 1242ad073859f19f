package crypto

import (
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// PEM block types and header of key files.
const (
	PrivateKeyBlockType = "PBFT PRIVATE KEY"
	PublicKeyBlockType  = "PBFT PUBLIC KEY"
	SchemeHeader        = "Scheme"
)

// Modes of key files written by WritePrivateKeyFile and WritePublicKeyFile.
const (
	PrivateKeyFileMode fs.FileMode = 0o600
	PublicKeyFileMode  fs.FileMode = 0o644
)

// WritePrivateKeyFile writes k to path as a PEM block of type
// "PBFT PRIVATE KEY" with a "Scheme: <name>" header. The file is created or
// truncated, and its mode is set to 0600 (also when it already existed with a
// wider mode) before the key is written.
func WritePrivateKeyFile(path string, k *PrivateKey) error {
	if k == nil {
		return fmt.Errorf("key file %s: private key is nil", path)
	}
	return writeKeyFile(path, PrivateKeyBlockType, k.scheme, k.raw, PrivateKeyFileMode)
}

// WritePublicKeyFile writes k to path as a PEM block of type
// "PBFT PUBLIC KEY" with a "Scheme: <name>" header. The file is created or
// truncated, and its mode is set to 0644.
func WritePublicKeyFile(path string, k *PublicKey) error {
	if k == nil || k.scheme == nil {
		return fmt.Errorf("key file %s: public key is nil", path)
	}
	return writeKeyFile(path, PublicKeyBlockType, k.scheme, k.raw, PublicKeyFileMode)
}

func writeKeyFile(path, blockType string, s *Scheme, raw []byte, mode fs.FileMode) error {
	data := pem.EncodeToMemory(&pem.Block{
		Type:    blockType,
		Headers: map[string]string{SchemeHeader: s.name},
		Bytes:   raw,
	})
	defer clear(data)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return fileError(path, err)
	}
	// O_CREATE's mode is subject to the umask and ignored for existing files.
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("key file %s: set mode %04o: %w", path, mode, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fileError(path, err)
	}
	if err := f.Close(); err != nil {
		return fileError(path, err)
	}
	return nil
}

// fileError prefixes an I/O error with "key file <path>: ", without repeating
// the path an *fs.PathError already carries. The underlying error stays
// wrapped, so errors.Is(err, fs.ErrNotExist) and the like keep working.
func fileError(path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Path == path {
		return fmt.Errorf("key file %s: %s: %w", path, pe.Op, pe.Err)
	}
	return fmt.Errorf("key file %s: %w", path, err)
}

// ReadPrivateKeyFile reads a private key written by WritePrivateKeyFile. It
// refuses a file that group or others may read or write (see
// PrivateKeyFileMode). Every error names the file and says what is wrong with
// it; for a missing file the error wraps the os error, so
// errors.Is(err, fs.ErrNotExist) holds.
func ReadPrivateKeyFile(path string) (*PrivateKey, error) {
	return readPrivateKeyFile(path, nil)
}

// ReadPrivateKeyFileScheme is ReadPrivateKeyFile that also fails when the
// file's scheme is not scheme (matched case-insensitively), e.g.
// "key file node1.key: scheme is ML-DSA-44, config wants Ed25519".
func ReadPrivateKeyFileScheme(path, scheme string) (*PrivateKey, error) {
	want, err := SchemeByName(scheme)
	if err != nil {
		return nil, fmt.Errorf("key file %s: config wants %w", path, err)
	}
	return readPrivateKeyFile(path, want)
}

func readPrivateKeyFile(path string, want *Scheme) (*PrivateKey, error) {
	s, raw, mode, err := readKeyFile(path, PrivateKeyBlockType, want)
	if err != nil {
		return nil, err
	}
	defer clear(raw)
	if err := checkPrivateMode(path, mode); err != nil {
		return nil, err
	}
	k, err := s.ParsePrivateKey(raw)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return k, nil
}

// ReadPublicKeyFile reads a public key written by WritePublicKeyFile. Every
// error names the file and says what is wrong with it.
func ReadPublicKeyFile(path string) (*PublicKey, error) {
	s, raw, _, err := readKeyFile(path, PublicKeyBlockType, nil)
	if err != nil {
		return nil, err
	}
	k, err := s.ParsePublicKey(raw)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return k, nil
}

// checkPrivateMode refuses a private key file that anybody but its owner may
// read or change: whoever can read it can sign as the node (and make a correct
// replica look like an equivocating one), whoever can write it can replace the
// key. Like ssh, we refuse rather than warn, and say how to fix it. The check
// runs once the file is known to hold a private key block, so that pointing
// key_file at a public key (mode 0644) is reported as that.
func checkPrivateMode(path string, mode fs.FileMode) error {
	perm := mode.Perm()
	if perm&0o077 == 0 {
		return nil
	}
	what := "accessible"
	if perm&0o044 != 0 {
		what = "readable"
	}
	return fmt.Errorf("key file %s: private key is %s by group or others (mode %04o); run: chmod 600 %s", path, what, perm, path)
}

// readKeyFile reads the single PEM block of path, checks its type and Scheme
// header (against want, if not nil) and returns the scheme, the payload and
// the file's mode (of the file read, not of a symlink to it).
func readKeyFile(path, blockType string, want *Scheme) (*Scheme, []byte, fs.FileMode, error) {
	data, mode, err := readFileMode(path)
	if err != nil {
		return nil, nil, 0, fileError(path, err)
	}
	defer clear(data)
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, nil, 0, fmt.Errorf("key file %s: not a PEM file (no %q block found)", path, blockType)
	}
	if block.Type != blockType {
		return nil, nil, 0, fmt.Errorf("key file %s: PEM block type is %q, want %q", path, block.Type, blockType)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, nil, 0, fmt.Errorf("key file %s: unexpected data after the %q block", path, blockType)
	}
	name, ok := block.Headers[SchemeHeader]
	if !ok || name == "" {
		return nil, nil, 0, fmt.Errorf("key file %s: missing %q PEM header", path, SchemeHeader)
	}
	s, err := SchemeByName(name)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("key file %s: %w", path, err)
	}
	if want != nil && s != want {
		return nil, nil, 0, fmt.Errorf("key file %s: scheme is %s, config wants %s", path, s.name, want.name)
	}
	return s, block.Bytes, mode, nil
}

// readFileMode reads path and returns its contents with the mode of the file
// opened, taken from the open descriptor so both describe the same file.
func readFileMode(path string) ([]byte, fs.FileMode, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	// Sized from the start, as os.ReadFile does, so the key is not left behind
	// in the discarded buffers of a growing read (the caller clears data).
	data := make([]byte, 0, st.Size()+1)
	for {
		n, err := f.Read(data[len(data):cap(data)])
		data = data[:len(data)+n]
		if err == io.EOF {
			return data, st.Mode(), nil
		}
		if err != nil {
			clear(data)
			return nil, 0, err
		}
		if len(data) == cap(data) {
			data = append(data, 0)[:len(data)]
		}
	}
}

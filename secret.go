package pibridge

import (
	"crypto/rand"
	"encoding/base64"
	"os"
	"path/filepath"
)

// RandomText is 256 random bits as URL-safe text: generated tokens,
// passwords and session values.
func RandomText() string {
	var b [32]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// WriteSecretFile stores value and a newline in dir/name, mode 0600,
// creating dir (0700) when missing. It writes a temporary file, fsyncs
// it, renames it into place and fsyncs dir, so that a crash or power
// loss leaves either no file or the whole secret, never a part.
func WriteSecretFile(dir, name, value string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+name+"-*") // 0600
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // once renamed, there is nothing to remove
	if _, err := f.WriteString(value + "\n"); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), filepath.Join(dir, name)); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil { // make the rename durable
		d.Sync()
		d.Close()
	}
	return nil
}

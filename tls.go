package pibridge

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// ServerTLS is what a server presents: a certificate and its key. HTTPS
// is on when both are set.
type ServerTLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Enabled reports whether both files are set.
func (t ServerTLS) Enabled() bool { return t.CertFile != "" && t.KeyFile != "" }

// Validate reports one set without the other. No I/O: LoadKeyPair reads.
func (t ServerTLS) Validate() error {
	if (t.CertFile == "") != (t.KeyFile == "") {
		return &FieldError{Msg: "set both cert_file and key_file, or neither"}
	}
	return nil
}

// LoadKeyPair reads and parses the pair; a problem names its field
// (cert_file, key_file) relative to the TLS section.
func (t ServerTLS) LoadKeyPair() (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(t.CertFile)
	if err != nil {
		return nil, &FieldError{Path: "cert_file", Msg: err.Error()}
	}
	keyPEM, err := os.ReadFile(t.KeyFile)
	if err != nil {
		return nil, &FieldError{Path: "key_file", Msg: err.Error()}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, &FieldError{Path: "cert_file",
			Msg: fmt.Sprintf("%s with key_file %s: %v", t.CertFile, t.KeyFile, err)}
	}
	return &cert, nil
}

// ClientTLS is what a client trusts and presents: the CA that signs the
// server's certificate (empty: the system's) and, for mutual TLS, its own
// certificate and key.
type ClientTLS struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Set reports whether any file is set: then the client configures TLS
// itself instead of using the defaults.
func (t ClientTLS) Set() bool { return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" }

// Validate reports a certificate without its key or a key without its
// certificate, with paths relative to the TLS section. No I/O.
func (t ClientTLS) Validate() error {
	var p Problems
	if t.CertFile != "" && t.KeyFile == "" {
		p.Addf("key_file", "must be set with tls.cert_file")
	}
	if t.KeyFile != "" && t.CertFile == "" {
		p.Addf("cert_file", "must be set with tls.key_file")
	}
	return p.Err()
}

// CheckFiles reports each file that is set but missing or not a file.
func (t ClientTLS) CheckFiles() error {
	var p Problems
	for _, f := range []struct{ path, file string }{
		{"ca_file", t.CAFile}, {"cert_file", t.CertFile}, {"key_file", t.KeyFile},
	} {
		if f.file != "" {
			p.Add(f.path, CheckFile(f.file))
		}
	}
	return p.Err()
}

// CheckFile reports a file the configuration names that cannot be
// opened at start: missing, unreadable or a directory. The message quotes
// the name; the caller adds the field path.
func CheckFile(name string) error {
	fi, err := os.Stat(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%q: no such file", name)
	case err != nil:
		return fmt.Errorf("%q: %v", name, errors.Unwrap(err))
	case fi.IsDir():
		return fmt.Errorf("%q: is a directory", name)
	}
	return nil
}

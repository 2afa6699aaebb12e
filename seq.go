package pibridge

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// seqLease is how many sequence numbers are reserved on disk at a time.
// Writing the counter per reading would cost an fsync each; leasing a block
// costs one per seqLease readings, and a crash skips at most one block,
// which keeps seq unique (it may jump, never repeat).
const seqLease = 4096

// seqStore persists the device's sequence counter in dir/seq.
// The core guards it with its own lock.
type seqStore struct {
	path  string
	next  uint64 // the next seq to hand out
	limit uint64 // seqs below limit are covered by the file on disk
}

func openSeqStore(dir string) (*seqStore, error) {
	s := &seqStore{path: filepath.Join(dir, "seq")}
	b, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		s.next = 1
	case err != nil:
		return nil, fmt.Errorf("seq: %w", err)
	default:
		n, perr := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if perr != nil {
			return nil, fmt.Errorf("seq: %s holds %q, not a number: %w", s.path, clip(string(b)), perr)
		}
		s.next = n
	}
	s.limit = s.next
	return s, nil
}

// take returns the next seq, extending the lease on disk when needed. A
// failing disk does not stop readings: seq keeps growing in memory and the
// error is reported so it can be logged and counted.
func (s *seqStore) take() (uint64, error) {
	n := s.next
	s.next++
	var err error
	if n >= s.limit {
		s.limit = n + seqLease
		err = writeFileAtomic(s.path, s.limit)
	}
	return n, err
}

// close records the exact next seq, so a clean restart continues without a gap.
func (s *seqStore) close() error { return writeFileAtomic(s.path, s.next) }

func writeFileAtomic(path string, n uint64) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("seq: %w", err)
	}
	_, err = f.WriteString(strconv.FormatUint(n, 10) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("seq: %w", err)
	}
	return nil
}

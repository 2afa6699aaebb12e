package mqtt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"

	pibridge "pibridge"
)

// outboxStore is the disk under a DiskOutbox: one bbolt file in
// production, a fake that fails on demand in tests.
type outboxStore interface {
	// apply deletes every reading with seq ≤ floor and stores batch, in
	// one transaction that is on disk when apply returns nil.
	apply(floor uint64, batch []pibridge.Reading) error
	// read returns up to max readings with seq ≥ from, in seq order.
	// Records that cannot be decoded are left out.
	read(from uint64, max int) ([]pibridge.Reading, error)
	close() error
}

// storeOpener opens (or creates) the store and calls load with the seq of
// every reading it holds, in ascending order.
type storeOpener func(load func(seq uint64)) (outboxStore, error)

// outboxFile is the outbox's file in state_dir.
const outboxFile = "mqtt-outbox.db"

var bucketName = []byte("readings")

// errStoreInUse is returned when another process holds the file's lock,
// such as a second bridge started on the same state_dir.
var errStoreInUse = errors.New("in use by another process (is a second bridge running on this state_dir?)")

// boltOpener opens path with bbolt. Keys are seqs, 8 bytes big-endian, so
// a cursor walks them in seq order; values are encodeRecord's.
func boltOpener(path string) storeOpener {
	return func(load func(uint64)) (st outboxStore, err error) {
		defer func() {
			// bbolt has panicked on damaged files before; a damaged outbox
			// must not take the bridge with it.
			if p := recover(); p != nil {
				st, err = nil, fmt.Errorf("%w: bbolt panicked: %v", errCorrupt, p)
			}
		}()
		db, err := bolt.Open(path, 0o600, &bolt.Options{
			Timeout: time.Second, // the lock: another bridge on the same state_dir
			// The freelist is rebuilt by a scan on open instead of being
			// written with every transaction: one page less per commit on
			// an SD card.
			NoFreelistSync: true,
			FreelistType:   bolt.FreelistMapType,
		})
		switch {
		case errors.Is(err, bolt.ErrTimeout):
			return nil, errStoreInUse
		case errors.Is(err, bolt.ErrInvalid), errors.Is(err, bolt.ErrChecksum), errors.Is(err, bolt.ErrVersionMismatch):
			return nil, fmt.Errorf("%w: %v", errCorrupt, err)
		case err != nil:
			return nil, err
		}
		s := &boltStore{db: db}
		if err := s.load(load); err != nil {
			db.Close()
			return nil, err
		}
		return s, nil
	}
}

// errCorrupt marks a file that cannot be read as an outbox at all.
var errCorrupt = errors.New("damaged outbox file")

type boltStore struct{ db *bolt.DB }

// load creates the bucket if needed and reports the keys. It writes only
// when it must (a new file, or keys that are not seqs), so that opening
// works on a full disk.
func (s *boltStore) load(load func(uint64)) error {
	var bad [][]byte
	missing := false
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketName)
		if b == nil {
			missing = true
			return nil
		}
		return b.ForEach(func(k, _ []byte) error {
			if len(k) != 8 {
				bad = append(bad, append([]byte(nil), k...))
				return nil
			}
			load(binary.BigEndian.Uint64(k))
			return nil
		})
	})
	if err != nil || (!missing && len(bad) == 0) {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketName)
		if err != nil {
			return err
		}
		for _, k := range bad {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// guarded runs a bbolt transaction so that a fault in its memory map (an
// I/O error on a worn SD card arrives as SIGBUS) becomes an error instead
// of ending the process. bbolt rolls the transaction back on the panic.
func guarded(f func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("outbox file: %v", p)
		}
	}()
	return f()
}

func (s *boltStore) apply(floor uint64, batch []pibridge.Reading) error {
	return guarded(func() error { return s.update(floor, batch) })
}

func (s *boltStore) update(floor uint64, batch []pibridge.Reading) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketName)
		if b == nil {
			return errors.New("outbox bucket missing")
		}
		// Acknowledged and dropped readings are always the oldest: delete
		// from the first key up to the floor.
		if floor > 0 {
			c := b.Cursor()
			for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) <= floor; k, _ = c.First() {
				if err := c.Delete(); err != nil {
					return err
				}
			}
		}
		// Keys arrive in ascending order: full pages instead of half-full
		// ones after each split.
		b.FillPercent = 1
		for _, r := range batch {
			if r.Seq <= floor {
				continue
			}
			// bbolt keeps key and value until the commit: one buffer each.
			rec := encodeRecord(binary.BigEndian.AppendUint64(make([]byte, 0, 8+recordSize(r)), r.Seq), r)
			if err := b.Put(rec[:8], rec[8:]); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *boltStore) read(from uint64, max int) ([]pibridge.Reading, error) {
	var out []pibridge.Reading
	err := guarded(func() error { return s.view(from, max, &out) })
	return out, err
}

func (s *boltStore) view(from uint64, max int, out *[]pibridge.Reading) error {
	return s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketName)
		if b == nil {
			return errors.New("outbox bucket missing")
		}
		c := b.Cursor()
		for k, v := c.Seek(binary.BigEndian.AppendUint64(nil, from)); k != nil && len(*out) < max; k, v = c.Next() {
			if len(k) != 8 {
				continue
			}
			r, ok := decodeRecord(v) // copies: v lives in bbolt's mmap
			if !ok {
				continue
			}
			r.Seq = binary.BigEndian.Uint64(k)
			*out = append(*out, r)
		}
		return nil
	})
}

func (s *boltStore) close() error { return s.db.Close() }

// moveAside renames a damaged outbox file so that a fresh one can be made,
// keeping the old one for whoever wants to look at it.
func moveAside(path string) (string, error) {
	to := fmt.Sprintf("%s.damaged-%s", path, time.Now().UTC().Format("20060102T150405Z"))
	return to, os.Rename(path, to)
}

// Record layout, version 1:
//
//	[0]      version (1)
//	[1]      value form: 0 none, 1 bool, 2 number, 3 toggle
//	[2:10]   value, float64 bits, big-endian
//	[10:18]  ts seconds since 1970, int64 big-endian
//	[18:22]  ts nanoseconds, uint32 big-endian
//	uvarint length + name, uvarint length + unit
//
// The seq is the key. The unit is stored with the reading, as it was
// taken, rather than looked up in a configuration that may have changed.
const recordVersion = 1

func recordSize(r pibridge.Reading) int {
	return 22 + 2*binary.MaxVarintLen16 + len(r.Name) + len(r.Unit)
}

func encodeRecord(b []byte, r pibridge.Reading) []byte {
	var form byte
	switch {
	case r.Value.IsBool():
		form = 1
	case r.Value.IsNumber():
		form = 2
	case r.Value.IsToggle():
		form = 3
	}
	b = append(b, recordVersion, form)
	b = binary.BigEndian.AppendUint64(b, math.Float64bits(r.Value.Float()))
	b = binary.BigEndian.AppendUint64(b, uint64(r.TS.Unix()))
	b = binary.BigEndian.AppendUint32(b, uint32(r.TS.Nanosecond()))
	b = binary.AppendUvarint(b, uint64(len(r.Name)))
	b = append(b, r.Name...)
	b = binary.AppendUvarint(b, uint64(len(r.Unit)))
	return append(b, r.Unit...)
}

func decodeRecord(b []byte) (pibridge.Reading, bool) {
	var r pibridge.Reading
	if len(b) < 22 || b[0] != recordVersion {
		return r, false
	}
	num := math.Float64frombits(binary.BigEndian.Uint64(b[2:10]))
	switch b[1] {
	case 0:
	case 1:
		r.Value = pibridge.Bool(num != 0)
	case 2:
		r.Value = pibridge.Number(num)
	case 3:
		r.Value = pibridge.Toggle()
	default:
		return r, false
	}
	r.TS = time.Unix(int64(binary.BigEndian.Uint64(b[10:18])), int64(binary.BigEndian.Uint32(b[18:22]))).UTC()
	rest := b[22:]
	for _, field := range []*string{&r.Name, &r.Unit} {
		n, k := binary.Uvarint(rest)
		if k <= 0 || n > uint64(len(rest)-k) {
			return r, false
		}
		*field = string(rest[k : k+int(n)])
		rest = rest[k+int(n):]
	}
	return r, len(rest) == 0
}

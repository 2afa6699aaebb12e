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

// seqLease is how many seqs a run reserves on disk (fsynced) ahead of the
// ones it hands out: after a power loss, whose lost disk tail may hide
// the last seqs used, seq continues above the reservation. The reservation
// is extended when half of it is used, by the journal's goroutine (or by
// Emit when there is no journal), never in the way of a reading.
const seqLease = 4096

// seqFile is state_dir/seq. While a run lives it holds the reservation
// and the boot it runs in; a clean Close replaces that with the exact next
// seq. Text: "2 running <limit> <first> <boot>" or "2 clean <next> 0 <boot>".
// Version 1 (one number: a lease limit, or the exact next seq after a
// clean stop) is still read.
type seqFile struct {
	clean bool
	n     uint64 // running: seqs below n may have been used; clean: the next seq
	first uint64 // running: the run's first seq
	boot  string
	v1    bool
}

func seqPath(dir string) string { return filepath.Join(dir, "seq") }

// readSeqFile returns the file's content, found false when there is none.
func readSeqFile(path string) (f seqFile, found bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return f, false, nil
	}
	if err != nil {
		return f, false, fmt.Errorf("seq: %w", err)
	}
	fields := strings.Fields(string(b))
	bad := func(what string) error {
		return fmt.Errorf("seq: %s holds %q: %s", path, Clip(string(b)), what)
	}
	if len(fields) == 1 {
		n, perr := strconv.ParseUint(fields[0], 10, 64)
		if perr != nil {
			return f, false, bad("not a number")
		}
		return seqFile{n: n, clean: true, v1: true}, true, nil
	}
	if len(fields) < 4 || fields[0] != "2" || (fields[1] != "running" && fields[1] != "clean") {
		return f, false, bad(`want "2 running|clean <seq> <first> [boot]"`)
	}
	f.clean = fields[1] == "clean"
	var perr error
	if f.n, perr = strconv.ParseUint(fields[2], 10, 64); perr != nil {
		return f, false, bad("the seq is not a number")
	}
	if f.first, perr = strconv.ParseUint(fields[3], 10, 64); perr != nil {
		return f, false, bad("the first seq is not a number")
	}
	if len(fields) > 4 {
		f.boot = fields[4]
	}
	return f, true, nil
}

// writeSeqFile replaces the file atomically and fsyncs it.
func writeSeqFile(path string, f seqFile) error {
	state := "running"
	if f.clean {
		state = "clean"
	}
	boot := f.boot
	if boot == "" {
		boot = "-"
	}
	line := "2 " + state + " " + strconv.FormatUint(f.n, 10) + " " + strconv.FormatUint(f.first, 10) + " " + boot + "\n"
	tmp := path + ".tmp"
	fh, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("seq: %w", err)
	}
	_, err = fh.WriteString(line)
	if err == nil {
		err = fh.Sync()
	}
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		// The rename is the commit: without the directory's fsync a power
		// loss may bring back the old reservation.
		if d, derr := os.Open(filepath.Dir(path)); derr == nil {
			d.Sync()
			d.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("seq: %w", err)
	}
	return nil
}

// resumeSeq decides where this run's seq starts. prev is the seq file
// (found false: none); last is the highest seq the journal kept (0: none),
// journal whether there is one; boot identifies the running kernel ("":
// unknown).
//
// After a crash within the same boot the kernel still has every journal
// record written before the crash, so seq continues at last+1: no hole.
// After a reboot without a clean stop (power loss) the journal's tail may
// be gone, so seq continues above the reservation: a skip, announced by
// FirstSeq > PreviousLastSeq+1.
func resumeSeq(prev seqFile, found bool, last uint64, journal bool, boot string) RunInfo {
	switch {
	case !found:
		return RunInfo{FirstSeq: last + 1, PreviousLastSeq: last, Clean: last == 0}
	case prev.clean:
		next := max(prev.n, last+1, 1)
		return RunInfo{FirstSeq: next, PreviousLastSeq: next - 1, Clean: true}
	}
	known := max(last, prev.first-min(prev.first, 1))
	// A journal with nothing of the previous run cannot say where it
	// stopped: its log failed or was lost, or the run crashed before its
	// first reading (then the skip is needless, but announced).
	if journal && boot != "" && boot == prev.boot && last >= prev.first {
		return RunInfo{FirstSeq: known + 1, PreviousLastSeq: known}
	}
	return RunInfo{FirstSeq: max(prev.n, known+1), PreviousLastSeq: known}
}

// bootID identifies the running kernel: equal across a process's crash,
// different after a reboot. "" where it cannot be read (then every unclean
// stop counts as a possible power loss).
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

package pibridge

import "strconv"

// RunInfo tells a consumer how this run's seqs join the previous run's
// (README "Seq across restarts"): seq continues at PreviousLastSeq+1 unless
// the disk lost its tail, and a FirstSeq above that is an announced skip,
// never a loss.
type RunInfo struct {
	// FirstSeq is the seq of this run's first reading.
	FirstSeq uint64 `json:"first_seq"`
	// PreviousLastSeq is the last seq the disk kept from the previous
	// run; 0 when there was none.
	PreviousLastSeq uint64 `json:"previous_last_seq"`
	// Clean is whether the previous run stopped cleanly (or there was
	// none); false after a crash, a kill or a power loss.
	Clean bool `json:"clean"`
}

// AppendRunJSON appends `"run":{…}` for the hello and P/D/meta.
func AppendRunJSON(b []byte, r RunInfo) []byte {
	b = append(b, `"run":{"first_seq":`...)
	b = strconv.AppendUint(b, r.FirstSeq, 10)
	b = append(b, `,"previous_last_seq":`...)
	b = strconv.AppendUint(b, r.PreviousLastSeq, 10)
	b = append(b, `,"clean":`...)
	b = strconv.AppendBool(b, r.Clean)
	return append(b, '}')
}

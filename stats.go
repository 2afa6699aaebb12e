package pibridge

// MQTTStats are the MQTT client's counters, read at each /metrics scrape.
// The mqtt package fills them and the metrics package exposes them, so a
// new counter is a field here, a line in mqtt's Stats and one family.
type MQTTStats struct {
	Connected       bool
	Queued          int    // readings waiting for the broker
	Dropped         uint64 // readings dropped from a full outbox, oldest first
	Published       uint64 // readings the broker has acknowledged
	Connects        uint64 // successful connections, the first included
	Commands        uint64 // commands received on /set and /pulse
	CommandsDropped uint64 // commands refused busy because the command queue was full
	AcksDropped     uint64 // acks not published: their queue was full (busy acks only), or no connection
	// OutboxFailing is true while the disk outbox cannot write (disk
	// full, read-only): readings wait in memory, a bounded number.
	OutboxFailing bool
	// OutboxLogFailures counts readings whose write to the outbox's log
	// failed (kept in memory only: a SIGKILL would lose them).
	OutboxLogFailures uint64
	// OutboxReplayed counts readings replayed from the log at start.
	OutboxReplayed uint64
}

// Package logring keeps the last log records in memory for the panel: a
// slog.Handler that passes every record on and tees a redacted copy into a
// bounded ring that readers page through by sequence number.
package logring

import (
	"context"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Record is one log record as the panel shows it. Seq grows by one per
// record kept, so a reader that saw seq N asks for what came after N.
type Record struct {
	Seq   uint64    `json:"seq"`
	Time  time.Time `json:"ts"`
	Level string    `json:"level"` // DEBUG, INFO, WARN or ERROR
	Part  string    `json:"part"`  // the logger's "part" attribute: gpio, mqtt, ws…
	Msg   string    `json:"msg"`
	Attrs string    `json:"attrs,omitempty"` // the other attributes, key=value
}

// Text is the record as one line of text, for the download.
func (r Record) Text() string {
	var b strings.Builder
	b.WriteString(r.Time.UTC().Format("2006-01-02T15:04:05.000Z"))
	b.WriteByte(' ')
	b.WriteString(r.Level)
	b.WriteByte(' ')
	b.WriteString(r.Part)
	b.WriteString(": ")
	b.WriteString(r.Msg)
	if r.Attrs != "" {
		b.WriteByte(' ')
		b.WriteString(r.Attrs)
	}
	return b.String()
}

const (
	// DefaultRecords and DefaultBytes bound the ring: a thousand records,
	// or fewer when they are long.
	DefaultRecords = 1000
	DefaultBytes   = 512 << 10
	// maxField clips a message or the attributes of one record.
	maxField = 2 << 10
	// recordOverhead is what a record costs besides its strings.
	recordOverhead = 96
	// DefaultPart names records of a logger without a part.
	DefaultPart = "bridge"
	redacted    = "[redacted]"
)

// Ring holds the newest records. Adding takes the lock only to store a
// record already formatted; the I/O of the handler it wraps happens
// outside it. The zero value is not usable: call New.
type Ring struct {
	maxRecords, maxBytes int
	epoch                string

	mu    sync.Mutex
	recs  []Record // circular: the oldest at head
	head  int
	n     int
	bytes int
	seq   uint64
	subs  map[chan struct{}]struct{}

	watching atomic.Int32
	secrets  atomic.Pointer[[]string]
}

// New returns a ring of at most maxRecords records and about maxBytes of
// text (0: the defaults).
func New(maxRecords, maxBytes int) *Ring {
	if maxRecords <= 0 {
		maxRecords = DefaultRecords
	}
	if maxBytes <= 0 {
		maxBytes = DefaultBytes
	}
	r := &Ring{maxRecords: maxRecords, maxBytes: maxBytes, epoch: strconv.FormatInt(time.Now().UnixNano(), 36), recs: make([]Record, maxRecords), subs: map[chan struct{}]struct{}{}}
	r.secrets.Store(&[]string{})
	return r
}

// Epoch names this ring among those of other runs: seqs start again at 1
// in each, so a reader resuming by seq checks the epoch first.
func (r *Ring) Epoch() string { return r.epoch }

// Since appends to dst the records newer than seq, oldest first, and
// returns it.
func (r *Ring) Since(seq uint64, dst []Record) []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.n {
		rec := r.recs[(r.head+i)%len(r.recs)]
		if rec.Seq > seq {
			dst = append(dst, rec)
		}
	}
	return dst
}

// Watch returns a channel that receives (at most one pending value) when
// records are added, and a function to stop watching.
func (r *Ring) Watch() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	r.mu.Lock()
	r.subs[ch] = struct{}{}
	r.mu.Unlock()
	r.watching.Add(1)
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			r.mu.Lock()
			delete(r.subs, ch)
			r.mu.Unlock()
			r.watching.Add(-1)
		})
	}
}

// Redact adds secrets (tokens, passwords) that must never show in a
// record; empty ones are ignored. Records already kept are cleaned too.
func (r *Ring) Redact(secrets ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := *r.secrets.Load()
	next := append([]string(nil), cur...)
	for _, s := range secrets {
		if s != "" && !containsString(next, s) {
			next = append(next, s)
		}
	}
	r.secrets.Store(&next)
	for i := range r.n {
		rec := &r.recs[(r.head+i)%len(r.recs)]
		rec.Msg = replaceSecrets(rec.Msg, next)
		rec.Attrs = replaceSecrets(rec.Attrs, next)
	}
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func (r *Ring) add(rec Record) {
	size := recordOverhead + len(rec.Msg) + len(rec.Attrs) + len(rec.Part)
	r.mu.Lock()
	r.seq++
	rec.Seq = r.seq
	for r.n > 0 && (r.n == len(r.recs) || r.bytes+size > r.maxBytes) {
		old := &r.recs[r.head]
		r.bytes -= recordOverhead + len(old.Msg) + len(old.Attrs) + len(old.Part)
		*old = Record{}
		r.head = (r.head + 1) % len(r.recs)
		r.n--
	}
	r.recs[(r.head+r.n)%len(r.recs)] = rec
	r.n++
	r.bytes += size
	if r.watching.Load() > 0 {
		for ch := range r.subs {
			select {
			case ch <- struct{}{}:
			default: // a wake-up is already pending
			}
		}
	}
	r.mu.Unlock()
}

// Len returns how many records the ring holds, and their size in bytes.
func (r *Ring) Len() (records, bytes int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n, r.bytes
}

// Handler returns a handler that passes every record to next and keeps a
// copy in the ring. Only records next is enabled for are kept.
func (r *Ring) Handler(next slog.Handler) slog.Handler {
	return &handler{ring: r, next: next, part: DefaultPart}
}

// Of returns the ring a handler made by Handler tees into, or nil.
func Of(h slog.Handler) *Ring {
	if h, ok := h.(*handler); ok {
		return h.ring
	}
	return nil
}

type handler struct {
	ring   *Ring
	next   slog.Handler
	part   string
	pre    string // attributes of WithAttrs, formatted
	prefix string // the open groups, "a.b."
}

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h *handler) Handle(ctx context.Context, rec slog.Record) error {
	secrets := *h.ring.secrets.Load()
	// The wrapped handler (the terminal, the journal) gets the record
	// without the secrets too.
	if r, changed := redactRecord(rec, secrets); changed {
		rec = r
	}
	err := h.next.Handle(ctx, rec) // I/O first, with no lock of ours held
	part := h.part
	var b strings.Builder
	b.WriteString(h.pre)
	rec.Attrs(func(a slog.Attr) bool {
		if h.prefix == "" && a.Key == "part" {
			part = a.Value.String()
			return true
		}
		appendAttr(&b, h.prefix, a)
		return true
	})
	h.ring.add(Record{
		Time:  rec.Time,
		Level: rec.Level.String(),
		Part:  part,
		Msg:   clipText(redact(rec.Message, secrets)),
		Attrs: clipText(redact(b.String(), secrets)),
	})
	return err
}

func (h *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.next = h.next.WithAttrs(attrs)
	var b strings.Builder
	b.WriteString(h.pre)
	for _, a := range attrs {
		if h.prefix == "" && a.Key == "part" {
			c.part = a.Value.String()
			continue
		}
		appendAttr(&b, h.prefix, a)
	}
	c.pre = b.String()
	return &c
}

func (h *handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.next = h.next.WithGroup(name)
	c.prefix = h.prefix + name + "."
	return &c
}

// secretKeys are attribute keys whose values are never kept, whatever
// they hold.
var secretKeys = []string{"token", "password", "passwd", "secret", "authorization", "cookie"}

func appendAttr(b *strings.Builder, prefix string, a slog.Attr) {
	v := a.Value.Resolve()
	if a.Key == "" && v.Kind() != slog.KindGroup {
		return
	}
	if v.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, g := range v.Group() {
			appendAttr(b, p, g)
		}
		return
	}
	if b.Len() > 0 {
		b.WriteByte(' ')
	}
	b.WriteString(prefix)
	b.WriteString(a.Key)
	b.WriteByte('=')
	lower := strings.ToLower(a.Key)
	for _, k := range secretKeys {
		if strings.Contains(lower, k) {
			b.WriteString(redacted)
			return
		}
	}
	var s string
	switch v.Kind() {
	case slog.KindTime:
		s = v.Time().UTC().Format(time.RFC3339Nano)
	default:
		s = v.String()
	}
	if s == "" || strings.ContainsAny(s, " \t\r\n\"") || !utf8.ValidString(s) {
		s = strconv.Quote(s)
	}
	b.WriteString(s)
}

// redactRecord returns rec with every secret, secret-named attribute and
// token in a URL replaced, and whether there was any.
func redactRecord(rec slog.Record, secrets []string) (slog.Record, bool) {
	msg := redact(rec.Message, secrets)
	changed := msg != rec.Message
	var stack [8]slog.Attr
	attrs := stack[:0]
	rec.Attrs(func(a slog.Attr) bool {
		r, c := redactAttr(a, secrets)
		changed = changed || c
		attrs = append(attrs, r)
		return true
	})
	if !changed {
		return rec, false
	}
	out := slog.NewRecord(rec.Time, rec.Level, msg, rec.PC)
	out.AddAttrs(attrs...)
	return out, true
}

func redactAttr(a slog.Attr, secrets []string) (slog.Attr, bool) {
	lower := strings.ToLower(a.Key)
	for _, k := range secretKeys {
		if strings.Contains(lower, k) {
			return slog.String(a.Key, redacted), true
		}
	}
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindGroup:
		g := v.Group()
		out := make([]slog.Attr, len(g))
		changed := false
		for i, ga := range g {
			var c bool
			out[i], c = redactAttr(ga, secrets)
			changed = changed || c
		}
		if changed {
			return slog.Attr{Key: a.Key, Value: slog.GroupValue(out...)}, true
		}
	case slog.KindString, slog.KindAny:
		s := v.String()
		if r := redact(s, secrets); r != s {
			return slog.String(a.Key, r), true
		}
	}
	return a, false
}

// tokenInURL finds a token carried in a URL's fragment or query, as in the
// panel URL the bridge prints (…/#token=…).
var tokenInURL = regexp.MustCompile(`([#?&](?:access_|read_)?token=)[^\s&"']+`)

func redact(s string, secrets []string) string {
	s = replaceSecrets(s, secrets)
	if strings.Contains(s, "token=") {
		s = tokenInURL.ReplaceAllString(s, "${1}"+redacted)
	}
	return s
}

func replaceSecrets(s string, secrets []string) string {
	for _, sec := range secrets {
		if strings.Contains(s, sec) {
			s = strings.ReplaceAll(s, sec, redacted)
		}
		// A quoted attribute value escapes some characters: match that form too.
		if q := strconv.Quote(sec); len(q) > len(sec)+2 && strings.Contains(s, q[1:len(q)-1]) {
			s = strings.ReplaceAll(s, q[1:len(q)-1], redacted)
		}
	}
	return s
}

func clipText(s string) string {
	if len(s) <= maxField {
		return s
	}
	cut := maxField
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

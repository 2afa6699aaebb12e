package metrics

import (
	"math"
	"slices"
	"strconv"
	"strings"
)

// ContentType is the text exposition format, version 0.0.4.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

type metricType string

const (
	counter metricType = "counter"
	gauge   metricType = "gauge"
	summary metricType = "summary"
)

// families collects one scrape's families before they are written sorted.
type families []*family

type family struct {
	name, help string
	typ        metricType
	samples    []sample
}

type sample struct {
	suffix string   // "_sum" or "_count" of a summary, else ""
	labels []string // name, value, name, value… in name order
	value  float64
}

func (fs *families) add(name, help string, typ metricType) *family {
	f := &family{name: name, help: help, typ: typ}
	*fs = append(*fs, f)
	return f
}

// sample adds a sample; labels are name/value pairs, given in name order.
func (f *family) sample(v float64, labels ...string) *family {
	f.samples = append(f.samples, sample{labels: labels, value: v})
	return f
}

// summary adds a summary's samples: one per quantile, then _sum and _count.
func (f *family) summary(quantiles []float64, values []float64, sum float64, count uint64) *family {
	for i, q := range quantiles {
		f.samples = append(f.samples, sample{labels: []string{"quantile", formatFloat(q)}, value: values[i]})
	}
	f.samples = append(f.samples,
		sample{suffix: "_sum", value: sum},
		sample{suffix: "_count", value: float64(count)})
	return f
}

func (fs families) appendText(b []byte) []byte {
	slices.SortStableFunc(fs, func(a, b *family) int { return strings.Compare(a.name, b.name) })
	for _, f := range fs {
		if len(f.samples) == 0 {
			continue // as client_golang: a vector without children is not shown
		}
		b = append(b, "# HELP "...)
		b = append(b, f.name...)
		b = append(b, ' ')
		b = appendEscaped(b, f.help, false)
		b = append(b, "\n# TYPE "...)
		b = append(b, f.name...)
		b = append(b, ' ')
		b = append(b, f.typ...)
		b = append(b, '\n')
		for _, s := range f.samples {
			b = append(b, f.name...)
			b = append(b, s.suffix...)
			if len(s.labels) > 0 {
				b = append(b, '{')
				for i := 0; i+1 < len(s.labels); i += 2 {
					if i > 0 {
						b = append(b, ',')
					}
					b = append(b, s.labels[i]...)
					b = append(b, `="`...)
					b = appendEscaped(b, s.labels[i+1], true)
					b = append(b, '"')
				}
				b = append(b, '}')
			}
			b = append(b, ' ')
			b = appendFloat(b, s.value)
			b = append(b, '\n')
		}
	}
	return b
}

// appendEscaped escapes as the text format wants: backslash and newline
// everywhere, the double quote in label values.
func appendEscaped(b []byte, s string, quote bool) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			b = append(b, `\\`...)
		case c == '\n':
			b = append(b, `\n`...)
		case c == '"' && quote:
			b = append(b, `\"`...)
		default:
			b = append(b, c)
		}
	}
	return b
}

func appendFloat(b []byte, v float64) []byte {
	switch {
	case math.IsInf(v, 1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	case math.IsNaN(v):
		return append(b, "NaN"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

func formatFloat(v float64) string { return string(appendFloat(nil, v)) }

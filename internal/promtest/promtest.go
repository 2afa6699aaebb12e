// Package promtest reads /metrics the way Prometheus does, for the tests of
// the metrics package and of the running bridge: one parser and one sample
// lookup instead of a copy in each.
package promtest

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Families is a parsed scrape, by family name.
type Families = map[string]*dto.MetricFamily

// Get fetches url, requires a 200 in the text format and parses it with
// Prometheus' own text parser.
func Get(t testing.TB, url string) Families {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %s", url, resp.Status)
	}
	if expfmt.ResponseFormat(resp.Header).FormatType() != expfmt.TypeTextPlain {
		t.Fatalf("%s: Content-Type %q: want the Prometheus text format", url, resp.Header.Get("Content-Type"))
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("%s does not parse: %v", url, err)
	}
	return fams
}

// Find returns the value of the first sample of family name whose labels
// include want.
func Find(fams Families, name string, want map[string]string) (float64, error) {
	f := fams[name]
	if f == nil {
		return 0, fmt.Errorf("no metric family %s", name)
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), nil
		case m.Gauge != nil:
			return m.Gauge.GetValue(), nil
		case m.Untyped != nil:
			return m.Untyped.GetValue(), nil
		}
	}
	return 0, fmt.Errorf("%s has no sample labelled %s", name, labels(want))
}

// Value is Find that fails the test when there is no such sample.
func Value(t testing.TB, fams Families, name string, want map[string]string) float64 {
	t.Helper()
	v, err := Find(fams, name, want)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func labels(m map[string]string) string {
	parts := make([]string, 0, len(m))
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s=%q", k, v))
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, ",") + "}"
}

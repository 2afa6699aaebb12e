package pibridge

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestFilterCovers(t *testing.T) {
	for _, tc := range []struct {
		allowed, requested string
		want               bool
	}{
		// equal
		{"home/kitchen/temp", "home/kitchen/temp", true},
		{"home/+/temp", "home/+/temp", true},
		{"home/#", "home/#", true},
		{"#", "#", true},
		{"+", "+", true},
		// narrower
		{"home/+/temp", "home/kitchen/temp", true},
		{"home/#", "home/kitchen/temp", true},
		{"home/#", "home/+/temp", true},
		{"home/#", "home/kitchen/#", true},
		{"home/#", "home", true}, // # also matches the parent level
		{"home/+/#", "home/kitchen", true},
		{"home/+/#", "home/+/temp/#", true},
		{"#", "anything/at/all", true},
		{"#", "+/+", true},
		{"+/temp", "kitchen/temp", true},
		{"home//temp", "home//temp", true}, // empty levels are levels
		{"home/+/temp", "home//temp", true},
		// wider: refused
		{"home/+/temp", "home/#", false},
		{"home/+/temp", "+/kitchen/temp", false},
		{"home/+/temp", "home/+/+", false},
		{"home/+/temp", "#", false},
		{"home/kitchen/temp", "home/+/temp", false},
		{"home/+", "home/#", false}, // # is wider than one level
		{"home/+/#", "home/#", false},
		{"home/+/#", "home", false},
		{"+", "#", false},
		{"+", "a/b", false},
		// elsewhere
		{"home/+/temp", "home/kitchen/humidity", false},
		{"home/+/temp", "home/kitchen", false},
		{"home/+/temp", "home/kitchen/temp/x", false},
		{"home/kitchen", "home/kitchen/temp", false},
		{"home/+", "home", false},
		{"home/#", "homes/x", false},
		{"home/#", "hom", false},
		{"Home/#", "home/x", false}, // topics are case-sensitive
		// $ topics are only reached through their literal first level
		{"#", "$SYS/broker/uptime", false},
		{"#", "$SYS/#", false},
		{"+/broker/uptime", "$SYS/broker/uptime", false},
		{"$SYS/#", "$SYS/broker/uptime", true},
		{"$SYS/#", "$SYS/#", true},
		{"home/+", "home/$x", true}, // only the first level is special
	} {
		if got := FilterCovers(tc.allowed, tc.requested); got != tc.want {
			t.Errorf("FilterCovers(%q, %q) = %v, want %v", tc.allowed, tc.requested, got, tc.want)
		}
	}
}

func TestCheckFilterAndTopicName(t *testing.T) {
	for _, tc := range []struct {
		s              string
		filter, topic  bool
		filterContains string
	}{
		{"home/kitchen/temp", true, true, ""},
		{"home/+/temp", true, false, ""},
		{"home/#", true, false, ""},
		{"#", true, false, ""},
		{"home//x", true, true, ""},
		{"/", true, true, ""},
		{"", false, false, "must not be empty"},
		{"home/#/x", false, false, "# must be alone in the last level"},
		{"home/x#", false, false, "# must be alone in the last level"},
		{"home/a+", false, false, "+ must fill a whole level"},
		{"a\x00b", false, false, "NUL"},
		{"a\xffb", false, false, "UTF-8"},
		{strings.Repeat("a", MaxTopicLen+1), false, false, "at most 65535 bytes"},
	} {
		err := CheckFilter(tc.s)
		if (err == nil) != tc.filter || (err != nil && !strings.Contains(err.Error(), tc.filterContains)) {
			t.Errorf("CheckFilter(%.20q) = %v, want ok=%v containing %q", tc.s, err, tc.filter, tc.filterContains)
		}
		if err := CheckTopicName(tc.s); (err == nil) != tc.topic {
			t.Errorf("CheckTopicName(%.20q) = %v, want ok=%v", tc.s, err, tc.topic)
		}
	}
}

// matches is a reference MQTT matcher, written independently of within:
// does filter match the topic name (no wildcards)?
func matches(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	f, t := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, fl := range f {
		if fl == "#" {
			return true
		}
		if i >= len(t) || (fl != "+" && fl != t[i]) {
			return false
		}
	}
	return len(f) == len(t)
}

// instances returns topic names that the filter matches: each wildcard
// replaced by literals, # also by nothing and by two levels.
func instances(filter string) []string {
	out := []string{""}
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		var next []string
		for _, p := range out {
			join := func(s string) string {
				if i == 0 {
					return s
				}
				return p + "/" + s
			}
			switch l {
			case "+":
				next = append(next, join("x"), join(""))
			case "#":
				next = append(next, join("x"), join("x/y"))
				if i > 0 {
					next = append(next, p) // "a/#" matches "a"
				}
			default:
				next = append(next, join(l))
			}
		}
		out = next
	}
	return out
}

func FuzzFilterCovers(f *testing.F) {
	for _, s := range [][2]string{
		{"home/+/temp", "home/kitchen/temp"}, {"home/+/temp", "home/#"}, {"home/#", "home"},
		{"#", "$SYS/x"}, {"$SYS/#", "$SYS/x/+"}, {"+/+", "a/+"}, {"a//b", "a/+/b"}, {"", ""}, {"/", "+/#"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, allowed, requested string) {
		got := FilterCovers(allowed, requested) // must not panic, whatever the input
		if CheckFilter(allowed) != nil || CheckFilter(requested) != nil {
			return
		}
		if !FilterCovers(allowed, allowed) {
			t.Fatalf("%q is not within itself", allowed)
		}
		if CheckTopicName(requested) == nil && got != matches(allowed, requested) {
			t.Fatalf("FilterCovers(%q, topic %q) = %v, the reference matcher says %v", allowed, requested, got, !got)
		}
		if !got {
			return
		}
		if strings.Contains(requested, "#") && !strings.Contains(allowed, "#") {
			t.Fatalf("FilterCovers(%q, %q): a # let through by a filter without one", allowed, requested)
		}
		if strings.Count(requested, "+") > 8 {
			return // instances doubles with each +
		}
		for _, topic := range instances(requested) {
			if CheckTopicName(topic) == nil && matches(requested, topic) && !matches(allowed, topic) {
				t.Fatalf("FilterCovers(%q, %q), but %q matches the request and not the allowed filter", allowed, requested, topic)
			}
		}
	})
}

func TestFiltersOverlap(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"pibridge/demo/#", "pibridge/demo/#", true},
		{"#", "pibridge/demo/#", true},
		{"+/demo/#", "pibridge/demo/#", true},
		{"pibridge/+/status", "pibridge/demo/#", true},
		{"pibridge/demo", "pibridge/demo/#", true}, // # matches its parent level
		{"pibridge/demo/led/set", "pibridge/demo/#", true},
		{"pibridge/+", "pibridge/demo/#", true},
		{"+/+/+/+", "pibridge/demo/#", true},
		{"pibridge/other/#", "pibridge/demo/#", false},
		{"pibridge", "pibridge/demo/#", false},
		{"pibridge/+", "pibridge/demo/led", false},
		{"sensors/#", "pibridge/demo/#", false},
		{"+/other/#", "pibridge/demo/#", false},
		{"a/+/c", "a/b/+", true},
		{"a/+/c", "a/b/d", false},
		{"a/b", "a/b/c", false},
		{"a/+", "a", false},
		{"a//b", "a/+/b", true},
		{"$SYS/#", "#", false},
		{"$SYS/broker", "+/broker", false},
		{"$SYS/#", "$SYS/broker/+", true},
		{"homeassistant/#", "+/switch/x/config", true},
	} {
		if got := FiltersOverlap(tc.a, tc.b); got != tc.want {
			t.Errorf("FiltersOverlap(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
		if got := FiltersOverlap(tc.b, tc.a); got != tc.want {
			t.Errorf("FiltersOverlap(%q, %q) = %v, want %v (swapped)", tc.b, tc.a, got, tc.want)
		}
	}
}

func TestTopicMatches(t *testing.T) {
	tests := []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/+", "a/b", true},
		{"a/+", "a/b/c", false},
		{"a/+/c", "a/b/c", true},
		{"a/#", "a", true},
		{"a/#", "a/b/c", true},
		{"#", "a/b", true},
		{"+", "a", true},
		{"+", "a/b", false},
		{"+/+", "/x", true},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
		{"#", "$SYS/x", false},
		{"+/x", "$SYS/x", false},
		{"$SYS/#", "$SYS/x", true},
		{"a/+", "a/", true},
	}
	for _, tt := range tests {
		if got := TopicMatches(tt.filter, tt.topic); got != tt.want {
			t.Errorf("TopicMatches(%q, %q) = %v, want %v", tt.filter, tt.topic, got, tt.want)
		}
	}
}

func TestCheckFilter(t *testing.T) {
	tests := []struct{ filter, err string }{
		{"#", ""},
		{"+", ""},
		{"home/+/temp", ""},
		{"home/#", ""},
		{"+/+/#", ""},
		{"$SYS/#", ""},
		{"", "must not be empty"},
		{"home#", `"home#": # must be alone in the last level`},
		{"#/a", `"#/a": # must be alone in the last level`},
		{"a+/b", `"a+/b": + must fill a whole level`},
		{"a/\x00", `"a/\x00": must not contain NUL`},
	}
	for _, tt := range tests {
		if got := errString(CheckFilter(tt.filter)); got != tt.err {
			t.Errorf("CheckFilter(%q) = %q, want %q", tt.filter, got, tt.err)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestClip(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"short", "short"},
		{strings.Repeat("a", 64), strings.Repeat("a", 64)},
		{strings.Repeat("a", 65), strings.Repeat("a", 64) + "…"},
		// "é" is two bytes: byte 64 is the second half of the 32nd é, so the cut falls before it.
		{strings.Repeat("é", 40), strings.Repeat("é", 32) + "…"},
		{"a" + strings.Repeat("é", 40), "a" + strings.Repeat("é", 31) + "…"},
		// a four-byte rune straddling byte 64
		{strings.Repeat("a", 62) + "😀" + "tail", strings.Repeat("a", 62) + "…"},
	} {
		got := Clip(tc.in)
		if got != tc.want {
			t.Errorf("Clip(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if !utf8.ValidString(got) {
			t.Errorf("Clip(%q) = %q: not valid UTF-8", tc.in, got)
		}
	}
}

package ws

import (
	"strings"
	"testing"
)

func TestWithin(t *testing.T) {
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
		if got := within(tc.allowed, tc.requested); got != tc.want {
			t.Errorf("within(%q, %q) = %v, want %v", tc.allowed, tc.requested, got, tc.want)
		}
	}
}

func TestValidFilterAndTopic(t *testing.T) {
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
		{strings.Repeat("a", maxTopicLen+1), false, false, "at most 65535 bytes"},
	} {
		err := validFilter(tc.s)
		if (err == nil) != tc.filter || (err != nil && !strings.Contains(err.Error(), tc.filterContains)) {
			t.Errorf("validFilter(%.20q) = %v, want ok=%v containing %q", tc.s, err, tc.filter, tc.filterContains)
		}
		if err := validTopic(tc.s); (err == nil) != tc.topic {
			t.Errorf("validTopic(%.20q) = %v, want ok=%v", tc.s, err, tc.topic)
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

func FuzzWithin(f *testing.F) {
	for _, s := range [][2]string{
		{"home/+/temp", "home/kitchen/temp"}, {"home/+/temp", "home/#"}, {"home/#", "home"},
		{"#", "$SYS/x"}, {"$SYS/#", "$SYS/x/+"}, {"+/+", "a/+"}, {"a//b", "a/+/b"}, {"", ""}, {"/", "+/#"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, allowed, requested string) {
		got := within(allowed, requested) // must not panic, whatever the input
		if validFilter(allowed) != nil || validFilter(requested) != nil {
			return
		}
		if !within(allowed, allowed) {
			t.Fatalf("%q is not within itself", allowed)
		}
		if validTopic(requested) == nil && got != matches(allowed, requested) {
			t.Fatalf("within(%q, topic %q) = %v, the reference matcher says %v", allowed, requested, got, !got)
		}
		if !got {
			return
		}
		if strings.Contains(requested, "#") && !strings.Contains(allowed, "#") {
			t.Fatalf("within(%q, %q): a # let through by a filter without one", allowed, requested)
		}
		if strings.Count(requested, "+") > 8 {
			return // instances doubles with each +
		}
		for _, topic := range instances(requested) {
			if validTopic(topic) == nil && matches(requested, topic) && !matches(allowed, topic) {
				t.Fatalf("within(%q, %q), but %q matches the request and not the allowed filter", allowed, requested, topic)
			}
		}
	})
}

package pibridge

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxTopicLen is MQTT's limit on a topic name or filter (a two-byte length).
const MaxTopicLen = 65535

// CheckFilter checks an MQTT topic filter: not empty, at most MaxTopicLen
// bytes of UTF-8 without NUL, + filling a whole level and # alone in the
// last level. Errors quote the filter, clipped: it may come from a client.
func CheckFilter(f string) error {
	if err := checkTopicChars(f); err != nil {
		return err
	}
	for l, rest, more := "", f, true; more; {
		l, rest, more = strings.Cut(rest, "/")
		switch {
		case strings.Contains(l, "#") && (l != "#" || more):
			return fmt.Errorf("%q: # must be alone in the last level", Clip(f))
		case strings.Contains(l, "+") && l != "+":
			return fmt.Errorf("%q: + must fill a whole level", Clip(f))
		}
	}
	return nil
}

// CheckTopicName checks a topic name to publish to: a filter without
// wildcards (a broker disconnects a client that publishes to one).
func CheckTopicName(t string) error {
	if err := checkTopicChars(t); err != nil {
		return err
	}
	if strings.ContainsAny(t, "+#") {
		return fmt.Errorf("%q: must not contain + or #", Clip(t))
	}
	return nil
}

func checkTopicChars(s string) error {
	switch {
	case s == "":
		return errors.New("must not be empty")
	case len(s) > MaxTopicLen:
		return fmt.Errorf("must be at most %d bytes", MaxTopicLen)
	case !utf8.ValidString(s):
		return fmt.Errorf("%q: must be valid UTF-8", Clip(s))
	case strings.ContainsRune(s, 0):
		return fmt.Errorf("%q: must not contain NUL", Clip(s))
	}
	return nil
}

// TopicMatches reports whether an MQTT topic name matches a filter with +
// and #. A wildcard first level never matches a topic that starts with $
// ($SYS and the like), as MQTT says.
func TopicMatches(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		if fl == "#" {
			return true
		}
		tl, trest, tmore := strings.Cut(topic, "/")
		if fl != "+" && fl != tl {
			return false
		}
		switch {
		case fmore && tmore:
			filter, topic = frest, trest
		case !fmore && !tmore:
			return true
		case fmore:
			return frest == "#" // "a/#" matches "a" too
		default:
			return false
		}
	}
}

// FilterCovers reports whether every topic that inner matches is also
// matched by outer: inner is outer itself or narrower. Both must be valid
// filters; a topic name is a filter without wildcards, so FilterCovers
// also checks a publish topic against an allow list.
//
// Level by level: a # in outer covers whatever follows, including nothing
// ("home/#" covers "home"); a + covers one level, a literal or a +; a
// literal covers only itself. A wildcard in inner where outer has a
// literal, or a # where outer has a +, widens it: with outer "home/+/temp",
// "home/#" and "+/kitchen/temp" are not covered. As in matching, a $ topic
// needs a literal $ first level in outer.
func FilterCovers(outer, inner string) bool {
	if strings.HasPrefix(inner, "$") && (outer == "" || outer[0] == '+' || outer[0] == '#') {
		return false
	}
	a, r := outer, inner
	for {
		al, arest, amore := strings.Cut(a, "/")
		if al == "#" {
			return true
		}
		rl, rrest, rmore := strings.Cut(r, "/")
		switch {
		case rl == "#":
			return false // only a # covers a #
		case al == "+":
			// covers any single level, a literal or a +
		case rl == "+" || al != rl:
			return false
		}
		switch {
		case amore && rmore:
			a, r = arest, rrest
		case !amore && !rmore:
			return true
		case amore && !rmore:
			return arest == "#" // outer "x/#" still covers "x"
		default:
			return false // inner is deeper than outer reaches
		}
	}
}

// FiltersOverlap reports whether some topic matches both filters a and b,
// honouring the $ rule of TopicMatches.
func FiltersOverlap(a, b string) bool {
	if strings.HasPrefix(a, "$") != strings.HasPrefix(b, "$") {
		// Only a literal $ level matches a $ topic, and only a topic
		// without $ matches a filter whose first level lacks one.
		return false
	}
	for {
		al, arest, amore := strings.Cut(a, "/")
		bl, brest, bmore := strings.Cut(b, "/")
		if al == "#" || bl == "#" {
			return true
		}
		if al != "+" && bl != "+" && al != bl {
			return false
		}
		switch {
		case amore && bmore:
			a, b = arest, brest
		case !amore && !bmore:
			return true
		case amore:
			return arest == "#" // "x/#" matches "x" too
		default:
			return brest == "#"
		}
	}
}

// clipLen is how many bytes of a client's string Clip keeps.
const clipLen = 64

// Clip shortens a string that came from outside (a name, a topic, a
// value) for a log line or an error message, never cutting a UTF-8
// character in half.
func Clip(s string) string {
	if len(s) <= clipLen {
		return s
	}
	i := clipLen
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}

package ws

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// maxTopicLen is MQTT's limit on a topic name or filter (a two-byte length).
const maxTopicLen = 65535

// validFilter checks an MQTT topic filter: not empty, UTF-8 without NUL,
// + filling a whole level and # alone in the last level. Errors quote the
// filter, clipped: they go back to the client that sent it.
func validFilter(f string) error {
	if err := validTopicChars(f); err != nil {
		return err
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		switch {
		case strings.Contains(l, "#") && (l != "#" || i != len(levels)-1):
			return fmt.Errorf("%q: # must be alone in the last level", clip(f))
		case strings.Contains(l, "+") && l != "+":
			return fmt.Errorf("%q: + must fill a whole level", clip(f))
		}
	}
	return nil
}

// validTopic checks a topic name to publish to: a filter without wildcards.
func validTopic(t string) error {
	if err := validTopicChars(t); err != nil {
		return err
	}
	if strings.ContainsAny(t, "+#") {
		return fmt.Errorf("%q: a topic to publish to must not contain + or #", clip(t))
	}
	return nil
}

func validTopicChars(s string) error {
	switch {
	case s == "":
		return errors.New("a topic must not be empty")
	case len(s) > maxTopicLen:
		return fmt.Errorf("a topic must be at most %d bytes", maxTopicLen)
	case !utf8.ValidString(s):
		return fmt.Errorf("%q: a topic must be valid UTF-8", clip(s))
	case strings.ContainsRune(s, 0):
		return fmt.Errorf("%q: a topic must not contain NUL", clip(s))
	}
	return nil
}

// within reports whether every topic that requested matches is also
// matched by allowed: requested is allowed itself or narrower. Both must be
// valid filters (a topic name is a filter without wildcards, so within is
// also how a publish topic is checked).
//
// Level by level: a # in allowed covers whatever follows, including
// nothing ("home/#" covers "home"); a + in allowed covers one level, a
// literal or a +; a literal covers only itself. A wildcard in requested
// where allowed has a literal, or a # where allowed has a +, widens the
// request and is refused: with allowed "home/+/temp", "home/#" and
// "+/kitchen/temp" are outside.
//
// As in MQTT, topics starting with $ ($SYS/…) are not matched by a
// wildcard in the first level: requested "$SYS/#" needs an allowed filter
// whose first level is literally "$SYS".
func within(allowed, requested string) bool {
	if strings.HasPrefix(requested, "$") && (allowed == "" || allowed[0] == '+' || allowed[0] == '#') {
		return false
	}
	a, r := allowed, requested
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
			// requested ends here; allowed "x/#" still covers "x"
			return arest == "#"
		default:
			return false // requested is deeper than allowed reaches
		}
	}
}

// allowedBy returns whether requested is within one of the allowed filters.
func allowedBy(allowed []string, requested string) bool {
	for _, a := range allowed {
		if within(a, requested) {
			return true
		}
	}
	return false
}

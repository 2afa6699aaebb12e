package mqtt

import "testing"

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

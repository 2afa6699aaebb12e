package mqtt

import "strings"

// FiltersOverlap reports whether some topic matches both MQTT topic
// filters a and b. Like TopicMatches, it honours that a wildcard first
// level never matches a topic starting with $.
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

// ownFilters are the filters covering what the bridge itself publishes
// and acts on: its device's topics and, with discovery, Home Assistant's.
func (c *Config) ownFilters() []string {
	own := []string{c.TopicPrefix + "/" + c.DeviceID + "/#"}
	if c.discovery() {
		own = append(own, c.HomeAssistant.Prefix+"/#")
	}
	if c.Homie.Enabled {
		own = append(own, c.homieBase()+"/#")
	}
	return own
}

// homieBase is the device's Homie topic root, <prefix>/5/<homie id>.
func (c *Config) homieBase() string { return c.Homie.Prefix + "/5/" + homieID(c.DeviceID) }

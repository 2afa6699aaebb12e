package mqtt

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

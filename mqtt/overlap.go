package mqtt

// ownFilters are the filters covering what the bridge itself publishes
// and acts on: its device's topics and, with discovery, Home Assistant's.
func (c *Config) ownFilters() []string {
	own := []string{c.TopicPrefix + "/" + c.deviceID + "/#"}
	if c.discovery() {
		own = append(own, c.HomeAssistant.Prefix+"/#")
	}
	return own
}

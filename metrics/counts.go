package metrics

// Counts are the counters /metrics shows that only Metrics keeps, for a
// page that shows them to people (the panel's device page).
type Counts struct {
	// Readings by signal, since the start.
	Readings map[string]uint64 `json:"readings"`
	// Commands by door (ws, http, mqtt) and result (ok, refused, error).
	Commands map[string]map[string]uint64 `json:"commands"`
	// OutputCommands by signal and result (ok, error), set and pulse together.
	OutputCommands map[string]map[string]uint64 `json:"output_commands"`
}

// Counts returns the counters as they are now.
func (m *Metrics) Counts() Counts {
	c := Counts{
		Readings:       make(map[string]uint64, len(m.signals)),
		Commands:       map[string]map[string]uint64{},
		OutputCommands: map[string]map[string]uint64{},
	}
	for _, name := range m.signals {
		c.Readings[name] = m.readings[name].Load()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, v := range m.bySource {
		if c.Commands[k[0]] == nil {
			c.Commands[k[0]] = map[string]uint64{}
		}
		c.Commands[k[0]][k[1]] += v
	}
	for k, v := range m.commands {
		if c.OutputCommands[k[0]] == nil {
			c.OutputCommands[k[0]] = map[string]uint64{}
		}
		c.OutputCommands[k[0]][k[2]] += v
	}
	return c
}

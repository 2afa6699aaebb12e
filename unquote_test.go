package pibridge

import (
	"encoding/json"
	"testing"
)

// UnquotePlain is a shortcut past json.Unmarshal: where it answers, it must
// answer exactly as json.Unmarshal does.
func TestUnquotePlainAgreesWithJSON(t *testing.T) {
	for _, raw := range []string{
		`""`, `"led"`, `"air.temperature"`, `"°C ünïcødé 🌡"`, `"a\"b"`, `"a\\b"`, `"\u00e9"`,
		`"\ud800"`, "\"\xff\xfe\"", "\"caf\xc3\"", `"tab	?"`, `"/"`, `"\/"`,
	} {
		var want string
		err := json.Unmarshal([]byte(raw), &want)
		if got, ok := UnquotePlain([]byte(raw)); ok && (err != nil || got != want) {
			t.Errorf("%q: UnquotePlain %q, json.Unmarshal %q %v", raw, got, want, err)
		}
	}
}

func FuzzUnquotePlain(f *testing.F) {
	for _, s := range []string{`"led"`, `"a\"b"`, "\"\xff\"", `"é"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, ok := UnquotePlain(raw)
		if !ok {
			return
		}
		var want string
		if err := json.Unmarshal(raw, &want); err != nil || got != want {
			t.Fatalf("%q: UnquotePlain %q, json.Unmarshal %q %v", raw, got, want, err)
		}
	})
}

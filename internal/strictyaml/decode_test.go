package strictyaml

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"pibridge"
)

type leaf struct {
	Pin  string            `yaml:"pin"`
	Wait pibridge.Duration `yaml:"wait"`
}

type inner struct {
	Port  int     `yaml:"port"`
	Ratio float64 `yaml:"ratio"`
	On    bool    `yaml:"on"`
	Leaf  *leaf   `yaml:"leaf"`
}

type common struct {
	Board string `yaml:"board"`
}

type doc struct {
	common  `yaml:",inline"`
	Name    string            `yaml:"name"`
	QoS     int               `yaml:"qos"`
	Items   []leaf            `yaml:"items"`
	Section *inner            `yaml:"section"`
	Tags    map[string]int    `yaml:"tags"`
	Every   pibridge.Duration `yaml:"every"`
	Any     any               `yaml:"any"`
	Raw     yaml.Node         `yaml:"raw"`
	Skipped string            `yaml:"-"`
	private string
}

// problem is one FieldError as the test expects it.
type problem struct {
	path string
	line int
	msg  string
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name  string
		yaml  string
		check func(*doc) bool // on what did decode; nil for no check
		want  []problem
	}{
		{
			name: "everything well formed",
			yaml: "board: sim\nname: 42\nqos: 0x2\nitems: [{pin: GPIO17, wait: 20ms}]\nsection: {port: 1_000, ratio: 0.5, on: true, leaf: {pin: P1_11}}\ntags: {a: 1}\nevery: 5m\nany: [1, x]\n",
			check: func(d *doc) bool {
				return d.Board == "sim" && d.Name == "42" && d.QoS == 2 && d.Items[0].Wait.D() == 20*time.Millisecond &&
					d.Section.Port == 1000 && d.Section.Leaf.Pin == "P1_11" && d.Tags["a"] == 1 && d.Every.D() == 5*time.Minute &&
					reflect.DeepEqual(d.Any, []any{1, "x"})
			},
		},
		{
			name: "unknown key at depth",
			yaml: "section:\n  leaf:\n    pin: GPIO4\n    colour: red\n",
			want: []problem{{"section.leaf.colour", 4, "unknown key (line 4)"}},
		},
		{
			name: "keys that are no key of the struct",
			yaml: "skipped: x\nprivate: y\ncommon: z\n",
			want: []problem{{"skipped", 1, "unknown key (line 1)"}, {"private", 2, "unknown key (line 2)"}, {"common", 3, "unknown key (line 3)"}},
		},
		{
			name: "wrong type in a slice item, the rest decoded",
			yaml: "items:\n  - {pin: GPIO17}\n  - {pin: [1]}\n  - {pin: GPIO22, wait: soon}\n  - x\nqos: 1\n",
			check: func(d *doc) bool {
				return len(d.Items) == 4 && d.Items[0].Pin == "GPIO17" && d.Items[3].Pin == "" && d.QoS == 1
			},
			want: []problem{
				{"items[1].pin", 3, "want a string, not a list"},
				{"items[2].wait", 4, `"soon": not a duration (want e.g. "500ms", "10s", "5m")`},
				{"items[3]", 5, `"x": want a mapping of keys`},
			},
		},
		{
			name: "wrong scalars",
			yaml: "qos: lots\nsection: {port: 1.5, ratio: x, on: maybe}\nitems: {pin: a}\ntags: [1]\n",
			want: []problem{
				{"qos", 1, `"lots": want a whole number`},
				{"section.port", 2, `"1.5": want a whole number`},
				{"section.ratio", 2, `"x": want a number`},
				{"section.on", 2, `"maybe": want true or false`},
				{"items", 3, "want a list, not a mapping"},
				{"tags", 4, "want a mapping of keys, not a list"},
			},
		},
		{
			name:  "duplicate keys: one problem each, the first value kept",
			yaml:  "qos: 1\nname: a\nqos: 2\nsection: {port: 1, port: 2, port: 3}\nqos: 0\n",
			check: func(d *doc) bool { return d.QoS == 1 && d.Section.Port == 1 },
			want: []problem{
				{"qos", 3, "defined 3 times (lines 1, 3, 5); a key may appear once"},
				{"section.port", 4, "defined 3 times (lines 4, 4, 4); a key may appear once"},
			},
		},
		{
			name: "alias and merge",
			yaml: "items:\n  - &base {pin: GPIO5, wait: 1s}\n  - <<: *base\n    pin: GPIO6\n  - *base\nname: &n bob\nboard: *n\n",
			check: func(d *doc) bool {
				return d.Items[1].Pin == "GPIO6" && d.Items[1].Wait.D() == time.Second && d.Items[2].Pin == "GPIO5" && d.Board == "bob"
			},
		},
		{
			name: "an alias to a bad value is reported where it is used",
			yaml: "items:\n  - &bad {pin: GPIO5, colour: red}\n  - *bad\n",
			want: []problem{{"items[0].colour", 2, "unknown key (line 2)"}, {"items[1].colour", 2, "unknown key (line 2)"}},
		},
		{
			name:  "Duration",
			yaml:  "every: -1s\nitems: [{wait: {a: 1}}]\n",
			check: func(d *doc) bool { return d.Every == 0 },
			want: []problem{
				{"every", 1, `"-1s": a duration cannot be negative`},
				{"items[0].wait", 2, `want a duration such as "500ms" or "10s"`},
			},
		},
		{
			name: "nested pointer: allocated, and null empties it",
			yaml: "section:\n  leaf:\n    wait: 2s\n",
			check: func(d *doc) bool {
				return d.Section != nil && d.Section.Leaf != nil && d.Section.Leaf.Wait.D() == 2*time.Second
			},
		},
		{
			name:  "null keeps a scalar, empties a pointer",
			yaml:  "qos:\nsection: ~\n",
			check: func(d *doc) bool { return d.QoS == 7 && d.Section == nil },
		},
		{
			name:  "a yaml.Node field takes the node as it is",
			yaml:  "raw: {anything: [goes]}\n",
			check: func(d *doc) bool { return d.Raw.Kind == yaml.MappingNode && d.Raw.Line == 1 },
		},
		{
			name: "not a mapping at the top",
			yaml: "just text\n",
			want: []problem{{"", 1, `"just text": want a mapping of keys`}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Decoded over a value already set: what the text leaves out stays.
			d := doc{QoS: 7, Section: &inner{Port: 9}}
			err := Unmarshal([]byte(tt.yaml), &d)
			var got []problem
			if err != nil {
				var de *Error
				if !errors.As(err, &de) {
					t.Fatalf("error %v (%T), want an *Error", err, err)
				}
				for _, p := range de.Problems {
					got = append(got, problem{p.Path, p.Line, p.Msg})
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("problems:\n got  %+v\n want %+v", got, tt.want)
			}
			if tt.check != nil && !tt.check(&d) {
				t.Errorf("decoded %+v (section %+v)", d, d.Section)
			}
		})
	}
}

// A section the text leaves out keeps its defaults; a key it sets to zero
// is that zero, for validation to judge.
func TestDecodeOverDefaults(t *testing.T) {
	d := doc{QoS: 1, Name: "dflt", Section: &inner{Port: 8080, On: true}}
	if err := Unmarshal([]byte("qos: 0\nsection: {on: false}\n"), &d); err != nil {
		t.Fatal(err)
	}
	if d.QoS != 0 || d.Name != "dflt" || d.Section.Port != 8080 || d.Section.On {
		t.Errorf("decoded %+v %+v", d, *d.Section)
	}
}

func TestDecodeLimits(t *testing.T) {
	var b strings.Builder
	for i := range 40 {
		b.WriteString("k")
		b.WriteString(strings.Repeat("x", i))
		b.WriteString(": 1\n")
	}
	dec := Decoder{MaxKeys: 10, MaxErrors: 5}
	var root yaml.Node
	if err := yaml.Unmarshal([]byte(b.String()), &root); err != nil {
		t.Fatal(err)
	}
	var de *Error
	if err := dec.Decode(&root, &doc{}); !errors.As(err, &de) {
		t.Fatalf("err = %v", err)
	}
	if len(de.Problems) != 5 || de.More != 6 || de.Problems[0].Msg != "the top level: 40 keys; at most 10 are read (the rest from line 11 on are ignored)" {
		t.Errorf("problems %q, %d more", de.Error(), de.More)
	}

	// A billion laughs: each level doubles the one below.
	laughs := "a: &a [[], []]\n"
	prev := "a"
	for _, l := range []string{"b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r", "s", "t", "u"} {
		laughs += l + ": &" + l + " [*" + prev + ", *" + prev + ", *" + prev + ", *" + prev + "]\n"
		prev = l
	}
	type tree []tree
	var m map[string]tree
	err := Unmarshal([]byte(laughs), &m)
	if err == nil || !strings.Contains(err.Error(), "aliases expand to a document far larger than the text") {
		t.Errorf("billion laughs: %v", err)
	}
}

func TestLines(t *testing.T) {
	var root yaml.Node
	if err := yaml.Unmarshal([]byte("a:\n  b: 1\n  c:\n    - x\n    - {d: 2}\n"), &root); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"a": 1, "a.b": 2, "a.c": 3, "a.c[0]": 4, "a.c[1]": 5, "a.c[1].d": 5}
	if got := Lines(&root); !reflect.DeepEqual(got, want) {
		t.Errorf("Lines = %v, want %v", got, want)
	}
}

// TestDecodeCycles: an anchor whose value merges or holds itself is one
// problem, named, and decoding goes on past it; however large the text
// (and so the budget), it cannot recurse the stack away.
func TestDecodeCycles(t *testing.T) {
	// A large text is a large alias budget: enough to recurse the stack away.
	pad := "tags: {k: 1}\nany: [" + strings.Repeat("1,", 350000) + "1]\n"
	type tree []tree
	tests := []struct {
		name string
		yaml string
		into func() any
		ok   func(v any) bool
	}{
		{"a mapping merging itself", "section: &x {<<: *x, port: 1}\nname: bob\n",
			func() any { return &doc{} }, func(v any) bool { return v.(*doc).Name == "bob" && v.(*doc).Section.Port == 1 }},
		{"a mapping merging itself, in a large text", "section: &x {<<: *x, port: 1}\nname: bob\n" + pad,
			func() any { return &doc{} }, func(v any) bool { return v.(*doc).Name == "bob" }},
		{"a list holding itself, in a large text", "a: &x [*x]\nb: [" + strings.Repeat("[],", 350000) + "[]]\n",
			func() any { return &map[string]tree{} }, func(v any) bool { return len((*v.(*map[string]tree))["b"]) == 350001 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := tt.into()
			err := Unmarshal([]byte(tt.yaml), v)
			if err == nil || !strings.Contains(err.Error(), "contains itself") {
				t.Errorf("err = %.300v, want the anchor that contains itself named", err)
			}
			if !tt.ok(v) {
				t.Errorf("decoding did not go on past the cycle")
			}
		})
	}
}

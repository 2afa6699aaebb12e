package main

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"pibridge"
)

// yaml.v3 reports decoding problems as "line N: …". Users think in field
// paths (outputs[1].pin), so we index the document by line and value and
// rewrite each message to name the field it is about.

type yamlSpot struct {
	line  int
	path  string
	key   string // the mapping key at this spot, "" for sequence items
	value string // the scalar value, "" for collections
	holds string // for a key: "map" or "seq" when its value is one
}

func indexYAML(n *yaml.Node) []yamlSpot {
	var spots []yamlSpot
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := k.Value
				if path != "" {
					p = path + "." + k.Value
				}
				spots = append(spots, yamlSpot{line: k.Line, path: p, key: k.Value, holds: collectionTag(v)})
				if v.Kind == yaml.ScalarNode {
					spots = append(spots, yamlSpot{line: v.Line, path: p, value: v.Value})
				}
				walk(v, p)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				p := fmt.Sprintf("%s[%d]", path, i)
				if c.Kind == yaml.ScalarNode {
					spots = append(spots, yamlSpot{line: c.Line, path: p, value: c.Value})
				}
				walk(c, p)
			}
		case yaml.AliasNode:
			// Aliases repeat another node; its own spots already name it.
		}
	}
	walk(n, "")
	return spots
}

func collectionTag(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "map"
	case yaml.SequenceNode:
		return "seq"
	}
	return ""
}

var (
	reLine         = regexp.MustCompile(`^line (\d+): (.*)$`)
	reUnknownField = regexp.MustCompile(`^field (\S+) not found in type \S+$`)
	reCannot       = regexp.MustCompile("^cannot unmarshal !!(\\w+) `(.*)` into (\\S+)$")
	reCannotNode   = regexp.MustCompile(`^cannot unmarshal !!(map|seq) into (\S+)$`)
	reQuoted       = regexp.MustCompile(`^("(?:[^"\\]|\\.)*")`)
)

// describeYAMLError turns one yaml.v3 message into "path: problem".
func describeYAMLError(spots []yamlSpot, msg string) *pibridge.FieldError {
	m := reLine.FindStringSubmatch(msg)
	if m == nil {
		return &pibridge.FieldError{Msg: msg}
	}
	line, _ := strconv.Atoi(m[1])
	rest := m[2]
	if u := reUnknownField.FindStringSubmatch(rest); u != nil {
		for _, s := range spots {
			if s.line == line && s.key == u[1] {
				return &pibridge.FieldError{Path: s.path, Msg: fmt.Sprintf("unknown key (line %d)", line)}
			}
		}
		return &pibridge.FieldError{Msg: fmt.Sprintf("line %d: %s: unknown key", line, u[1])}
	}
	if c := reCannotNode.FindStringSubmatch(rest); c != nil {
		// A mapping or list where something else belongs: find the key
		// on that line whose value is one.
		got := map[string]string{"map": "a mapping", "seq": "a list"}[c[1]]
		for _, s := range spots {
			if s.line == line && s.holds == c[1] {
				return &pibridge.FieldError{Path: s.path, Msg: fmt.Sprintf("want %s, not %s", goTypeWords(c[2], c[1]), got)}
			}
		}
	}
	value := ""
	if c := reCannot.FindStringSubmatch(rest); c != nil {
		value = c[2]
		rest = fmt.Sprintf("%q: want %s", c[2], goTypeWords(c[3], c[1]))
	} else if q := reQuoted.FindStringSubmatch(rest); q != nil {
		value, _ = strconv.Unquote(q[1])
	}
	var candidates []yamlSpot
	for _, s := range spots {
		if s.line == line && s.key == "" {
			candidates = append(candidates, s)
		}
	}
	for _, s := range candidates {
		if len(candidates) == 1 || (value != "" && strings.HasPrefix(s.value, strings.TrimSuffix(value, "..."))) {
			return &pibridge.FieldError{Path: s.path, Msg: rest}
		}
	}
	return &pibridge.FieldError{Msg: fmt.Sprintf("line %d: %s", line, rest)}
}

// goTypeWords says what a Go type expects in the words of a config file.
func goTypeWords(goType, gotTag string) string {
	switch {
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	case strings.HasPrefix(goType, "map[") || strings.Contains(goType, "Config"):
		return "a mapping of keys"
	case strings.HasPrefix(goType, "int") || strings.HasPrefix(goType, "uint"):
		return "a whole number"
	case strings.HasPrefix(goType, "float"):
		return "a number"
	case goType == "bool":
		return "true or false"
	case goType == "string":
		return "a string"
	}
	return fmt.Sprintf("a %s, not a %s", goType, gotTag)
}

// maxMappingKeys bounds the keys of one mapping that are decoded: yaml.v3
// compares every key of a mapping with every other, so a mapping of 100,000
// keys costs minutes. No section of a config has more than a few dozen.
const maxMappingKeys = 256

// dropDuplicateKeys removes from every mapping the keys that repeat an
// earlier one, adding one problem per repeated key, and the keys past
// maxMappingKeys, adding one problem for them. It reports whether it
// removed any. Linear in the document, however many repeats.
func dropDuplicateKeys(n *yaml.Node, path string, errs *fieldErrors) bool {
	changed := false
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			changed = dropDuplicateKeys(c, path, errs) || changed
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			changed = dropDuplicateKeys(c, fmt.Sprintf("%s[%d]", path, i), errs) || changed
		}
	case yaml.MappingNode:
		// yaml.v3 calls two keys the same when kind and text are.
		type key struct {
			kind  yaml.Kind
			value string
		}
		lines := map[key][]int{}
		var repeated []key
		kept := n.Content[:0] // written behind where it is read
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			kk := key{k.Kind, k.Value}
			seen := lines[kk]
			if len(seen) == 1 {
				repeated = append(repeated, kk)
			}
			lines[kk] = append(seen, k.Line)
			if seen == nil {
				kept = append(kept, k, v)
			}
		}
		for _, kk := range repeated {
			ls := lines[kk]
			shown := ls[:min(len(ls), 5)]
			more := ""
			if len(ls) > len(shown) {
				more = ", …"
			}
			errs.add(&pibridge.FieldError{Path: joinKey(path, kk.value), Msg: fmt.Sprintf("defined %d times (lines %s%s); a key may appear once", len(ls), joinInts(shown), more)})
		}
		changed = len(repeated) > 0
		if len(kept) > 2*maxMappingKeys {
			where := ""
			if path == "" {
				where = "the top level: "
			}
			errs.add(&pibridge.FieldError{Path: path, Msg: fmt.Sprintf("%s%d keys; at most %d are read (the rest from line %d on are ignored)", where, len(kept)/2, maxMappingKeys, kept[2*maxMappingKeys].Line)})
			kept = kept[:2*maxMappingKeys]
			changed = true
		}
		clear(n.Content[len(kept):])
		n.Content = kept
		for i := 0; i+1 < len(n.Content); i += 2 {
			changed = dropDuplicateKeys(n.Content[i+1], joinKey(path, n.Content[i].Value), errs) || changed
		}
	}
	return changed
}

func joinKey(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ", ")
}

// reencode writes the document out again (after dropDuplicateKeys) and
// maps each line of the new text to the line of the file it came from, so
// that problems still name the user's lines.
func reencode(root *yaml.Node) ([]byte, map[int]int, error) {
	src, err := yaml.Marshal(root)
	if err != nil {
		return nil, nil, err
	}
	var again yaml.Node
	if err := yaml.Unmarshal(src, &again); err != nil {
		return nil, nil, err
	}
	lines := map[int]int{}
	var walk func(a, b *yaml.Node)
	walk = func(a, b *yaml.Node) {
		if _, ok := lines[a.Line]; !ok {
			lines[a.Line] = b.Line
		}
		for i := 0; i < len(a.Content) && i < len(b.Content); i++ {
			walk(a.Content[i], b.Content[i])
		}
	}
	walk(&again, root)
	return src, lines, nil
}

// fileLine rewrites a yaml.v3 message's "line N" through lines, when the
// decoded text was re-encoded.
func fileLine(msg string, lines map[int]int) string {
	if lines == nil {
		return msg
	}
	m := reLine.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	n, _ := strconv.Atoi(m[1])
	if l, ok := lines[n]; ok {
		n = l
	}
	return fmt.Sprintf("line %d: %s", n, m[2])
}

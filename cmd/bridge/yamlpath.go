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

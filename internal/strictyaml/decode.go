// Package strictyaml decodes a parsed YAML document into a Go value
// strictly, reporting every problem with its field path and line.
package strictyaml

import (
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"

	"pibridge"
)

// Decoder walks a yaml.Node tree beside the value it fills, by
// reflection, so that each problem is known with its field path
// (outputs[1].pin) where it happens. yaml.v3's own decoder reports only
// "line N" strings, and Node.Decode cannot refuse unknown keys.
//
// Structs are read by their yaml tags (",inline" and "-" too), pointers
// are allocated, slices replaced, maps merged into, scalars read as
// yaml.v3 reads them. A type that implements yaml.Unmarshaler gets the
// node, and its error is reported at the node's path and line. Unknown
// keys, wrong types and repeated keys are problems; decoding goes on
// after each, so that one run reports them all. A key absent from the
// text (or null, for a non-pointer) leaves the value as it was: decoding
// over a part's defaults keeps them. A Decoder serves one Decode at a
// time.
type Decoder struct {
	// MaxKeys bounds the keys read of one mapping (0: no bound); the rest
	// are one problem.
	MaxKeys int
	// MaxErrors bounds the problems described (0: no bound); the rest are
	// counted in Error.More.
	MaxErrors int

	errs   []*pibridge.FieldError
	more   int
	budget int // node visits left: aliases must not expand without end
	// expanding holds the anchored nodes being decoded through an alias
	// or merge: one met again inside itself is a cycle, which the budget
	// alone would follow deeper than the stack goes.
	expanding map[*yaml.Node]bool
}

// Error is every problem Decode found, in the order of the text.
type Error struct {
	Problems []*pibridge.FieldError
	// More counts the problems past Decoder.MaxErrors.
	More int
}

func (e *Error) Error() string {
	s := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		s[i] = p.Error()
	}
	if e.More > 0 {
		s = append(s, fmt.Sprintf("… and %d more", e.More))
	}
	return strings.Join(s, "\n")
}

// Unwrap returns the problems, for errors.As and pibridge.Problems.Add.
func (e *Error) Unwrap() []error {
	out := make([]error, len(e.Problems))
	for i, p := range e.Problems {
		out[i] = p
	}
	return out
}

// Decode decodes n with a Decoder without bounds.
func Decode(n *yaml.Node, v any) error {
	var d Decoder
	return d.Decode(n, v)
}

// Unmarshal parses src and decodes it into v; a syntax error is returned
// as yaml.v3 words it.
func Unmarshal(src []byte, v any) error {
	var root yaml.Node
	if err := yaml.Unmarshal(src, &root); err != nil {
		return err
	}
	return Decode(&root, v)
}

// Decode fills v, a non-nil pointer, from n (a document or any node). It
// returns nil or an *Error; v holds whatever did decode either way.
func (d *Decoder) Decode(n *yaml.Node, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("strictyaml: Decode needs a non-nil pointer, not %T", v)
	}
	d.errs, d.more, d.expanding = nil, 0, nil
	// A config has no reason to expand beyond a few times its own size; a
	// "billion laughs" document does.
	d.budget = 4*countNodes(n) + 10000
	d.value(n, rv.Elem(), "")
	if len(d.errs) == 0 && d.more == 0 {
		return nil
	}
	e := &Error{Problems: d.errs, More: d.more}
	d.errs = nil
	return e
}

func countNodes(n *yaml.Node) int {
	if n == nil {
		return 0
	}
	c := 1
	for _, k := range n.Content {
		c += countNodes(k)
	}
	return c
}

func (d *Decoder) fail(path string, line int, format string, args ...any) {
	if d.MaxErrors > 0 && len(d.errs) >= d.MaxErrors {
		d.more++
		return
	}
	d.errs = append(d.errs, &pibridge.FieldError{Path: path, Line: line, Msg: fmt.Sprintf(format, args...)})
}

var (
	unmarshalerType     = reflect.TypeFor[yaml.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
	nodeType            = reflect.TypeFor[yaml.Node]()
)

// spend counts a node visit; false once the budget is spent.
func (d *Decoder) spend(path string, line int) bool {
	if d.budget--; d.budget < 0 {
		if d.budget == -1 {
			d.fail(path, line, "aliases expand to a document far larger than the text; decoding stopped")
		}
		return false
	}
	return true
}

// enter marks the anchored node a as being expanded at path; false (and
// a problem) when it already is.
func (d *Decoder) enter(a *yaml.Node, alias *yaml.Node, path string) bool {
	if d.expanding[a] {
		d.fail(path, alias.Line, "anchor %q contains itself", pibridge.Clip(alias.Value))
		return false
	}
	if d.expanding == nil {
		d.expanding = map[*yaml.Node]bool{}
	}
	d.expanding[a] = true
	return true
}

func (d *Decoder) value(n *yaml.Node, v reflect.Value, path string) {
	if !d.spend(path, n.Line) {
		return
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) > 0 {
			d.value(n.Content[0], v, path)
		}
		return
	case yaml.AliasNode:
		if d.enter(n.Alias, n, path) {
			d.value(n.Alias, v, path)
			delete(d.expanding, n.Alias)
		}
		return
	}
	if v.Type() == nodeType {
		v.Set(reflect.ValueOf(*n))
		return
	}
	if isNull(n) {
		// As yaml.v3 does: null empties what can be empty, and leaves the
		// rest (here: the default) alone.
		switch v.Kind() {
		case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Interface:
			v.SetZero()
		}
		return
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.value(n, v.Elem(), path)
		return
	}
	if v.CanAddr() {
		p := v.Addr()
		if p.Type().Implements(unmarshalerType) {
			if err := p.Interface().(yaml.Unmarshaler).UnmarshalYAML(n); err != nil {
				d.fail(path, n.Line, "%s", message(err))
			}
			return
		}
		if n.Kind == yaml.ScalarNode && p.Type().Implements(textUnmarshalerType) {
			if err := p.Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(n.Value)); err != nil {
				d.fail(path, n.Line, "%q: %v", pibridge.Clip(n.Value), err)
			}
			return
		}
	}
	switch v.Kind() {
	case reflect.Struct:
		d.structure(n, v, path)
	case reflect.Map:
		d.mapping(n, v, path)
	case reflect.Slice:
		d.sequence(n, v, path)
	case reflect.Interface:
		if err := n.Decode(v.Addr().Interface()); err != nil {
			d.fail(path, n.Line, "%s", message(err))
		}
	case reflect.Bool, reflect.String, reflect.Float32, reflect.Float64,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		d.scalar(n, v, path)
	default:
		d.fail(path, n.Line, "cannot hold a %s", v.Type())
	}
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" }

// message is an Unmarshaler's error as a problem's text: yaml.v3's
// TypeError (from a nested Node.Decode) keeps its own lines.
func message(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return strings.Join(te.Errors, "; ")
	}
	return strings.TrimPrefix(err.Error(), "yaml: ")
}

// scalar reads n as yaml.v3 would into v's type (so "0x10", "1_000" and
// "yes" mean what they mean to yaml.v3), with a message in the words of a
// config file when it cannot.
func (d *Decoder) scalar(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.wrongKind(n, v.Type(), path)
		return
	}
	tmp := reflect.New(v.Type())
	// yaml.v3 would cut 1.5 to 1 for an integer; a config means what it says.
	if words(v.Type()) == "a whole number" && n.ShortTag() == "!!float" {
		d.wrongKind(n, v.Type(), path)
		return
	}
	if err := n.Decode(tmp.Interface()); err != nil {
		d.wrongKind(n, v.Type(), path)
		return
	}
	v.Set(tmp.Elem())
}

func (d *Decoder) wrongKind(n *yaml.Node, t reflect.Type, path string) {
	switch n.Kind {
	case yaml.MappingNode:
		d.fail(path, n.Line, "want %s, not a mapping", words(t))
	case yaml.SequenceNode:
		d.fail(path, n.Line, "want %s, not a list", words(t))
	default:
		d.fail(path, n.Line, "%q: want %s", pibridge.Clip(n.Value), words(t))
	}
}

// words says what a Go type takes, in the words of a config file.
func words(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping of keys"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	}
	return "a " + t.String()
}

func (d *Decoder) sequence(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.SequenceNode {
		d.wrongKind(n, v.Type(), path)
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, c := range n.Content {
		d.value(c, s.Index(i), path+"["+strconv.Itoa(i)+"]")
	}
	v.Set(s)
}

func (d *Decoder) mapping(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.wrongKind(n, v.Type(), path)
		return
	}
	t := v.Type()
	if v.IsNil() {
		v.Set(reflect.MakeMap(t))
	}
	d.pairs(n, path, func(k, val *yaml.Node) {
		p := joinKey(path, k.Value)
		kv := reflect.New(t.Key()).Elem()
		before := len(d.errs) + d.more
		d.value(k, kv, p)
		if len(d.errs)+d.more != before {
			return
		}
		ev := reflect.New(t.Elem()).Elem()
		if old := v.MapIndex(kv); old.IsValid() {
			ev.Set(old) // decode over what is there, as over a default
		}
		d.value(val, ev, p)
		v.SetMapIndex(kv, ev)
	})
}

func (d *Decoder) structure(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.wrongKind(n, v.Type(), path)
		return
	}
	fields := fieldsOf(v.Type())
	d.pairs(n, path, func(k, val *yaml.Node) {
		p := joinKey(path, k.Value)
		index, ok := fields[k.Value]
		if !ok || k.Kind != yaml.ScalarNode {
			d.fail(p, k.Line, "unknown key (line %d)", k.Line)
			return
		}
		d.value(val, v.FieldByIndex(index), p)
	})
}

// fieldsOf maps each yaml key of a struct to its field, through inline
// structs, as yaml.v3 names them: the tag's name, else the field's name
// in lower case.
func fieldsOf(t reflect.Type) map[string][]int {
	if f, ok := fieldCache.Load(t); ok {
		return f.(map[string][]int)
	}
	fields := map[string][]int{}
	var walk func(t reflect.Type, index []int)
	walk = func(t reflect.Type, index []int) {
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() && !f.Anonymous {
				continue
			}
			tag := f.Tag.Get("yaml")
			if tag == "-" {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			at := append(index[:len(index):len(index)], i)
			if strings.Contains(","+opts+",", ",inline,") && f.Type.Kind() == reflect.Struct {
				walk(f.Type, at)
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			if _, dup := fields[name]; !dup {
				fields[name] = at
			}
		}
	}
	walk(t, nil)
	fieldCache.Store(t, fields)
	return fields
}

var fieldCache sync.Map // reflect.Type → map[string][]int

// pairs calls f for each key and value of a mapping: keys repeated are
// one problem each and only their first value is read, keys past MaxKeys
// one problem for all, and merge keys (<<: *base) supply the keys the
// mapping does not set itself.
func (d *Decoder) pairs(n *yaml.Node, path string, f func(k, v *yaml.Node)) {
	type key struct {
		kind  yaml.Kind
		value string
	}
	keyOf := func(i int) key {
		k := n.Content[i]
		if k.Kind == yaml.AliasNode && k.Alias != nil {
			k = k.Alias
		}
		return key{k.Kind, k.Value}
	}
	// Counted first, lines gathered only for the keys that repeat: a
	// hostile mapping may have 100,000 keys.
	count := make(map[key]int, len(n.Content)/2)
	var repeated []key
	kept := make([]*yaml.Node, 0, len(n.Content))
	for i := 0; i+1 < len(n.Content); i += 2 {
		kk := keyOf(i)
		c := count[kk]
		count[kk] = c + 1
		switch c {
		case 0:
			k := n.Content[i]
			if k.Kind == yaml.AliasNode && k.Alias != nil {
				k = k.Alias
			}
			kept = append(kept, k, n.Content[i+1])
		case 1:
			repeated = append(repeated, kk)
		}
	}
	var lines map[key][]int
	if len(repeated) > 0 {
		lines = make(map[key][]int, len(repeated))
		for i := 0; i+1 < len(n.Content); i += 2 {
			if kk := keyOf(i); count[kk] > 1 {
				lines[kk] = append(lines[kk], n.Content[i].Line)
			}
		}
	}
	for _, kk := range repeated {
		ls := lines[kk]
		shown := ls[:min(len(ls), 5)]
		more := ""
		if len(ls) > len(shown) {
			more = ", …"
		}
		d.fail(joinKey(path, kk.value), ls[1], "defined %d times (lines %s%s); a key may appear once", len(ls), joinInts(shown), more)
	}
	if d.MaxKeys > 0 && len(kept) > 2*d.MaxKeys {
		where := ""
		if path == "" {
			where = "the top level: "
		}
		first := kept[2*d.MaxKeys].Line
		d.fail(path, first, "%s%d keys; at most %d are read (the rest from line %d on are ignored)", where, len(kept)/2, d.MaxKeys, first)
		kept = kept[:2*d.MaxKeys]
	}
	var merges []*yaml.Node
	own := make(map[string]bool, len(kept)/2)
	for i := 0; i < len(kept); i += 2 {
		if isMerge(kept[i]) {
			merges = append(merges, kept[i+1])
		} else {
			own[kept[i].Value] = true
		}
	}
	for _, m := range merges {
		d.merge(m, path, own, f)
	}
	for i := 0; i < len(kept); i += 2 {
		if !isMerge(kept[i]) {
			f(kept[i], kept[i+1])
		}
	}
}

func isMerge(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Value == "<<" && (k.Tag == "" || k.Tag == "!" || k.ShortTag() == "!!merge")
}

// merge supplies the keys of a merged mapping (or list of them, the
// first winning) that are not set yet, marking them set.
func (d *Decoder) merge(m *yaml.Node, path string, set map[string]bool, f func(k, v *yaml.Node)) {
	if !d.spend(path, m.Line) {
		return
	}
	if m.Kind == yaml.AliasNode {
		if !d.enter(m.Alias, m, path) {
			return
		}
		defer delete(d.expanding, m.Alias)
		m = m.Alias
	}
	switch m.Kind {
	case yaml.SequenceNode:
		for _, c := range m.Content {
			if c.Kind == yaml.AliasNode && c.Alias.Kind != yaml.MappingNode {
				c = c.Alias
			}
			if c.Kind != yaml.MappingNode && c.Kind != yaml.AliasNode {
				d.fail(path, c.Line, "<<: want a mapping or a list of mappings to merge")
				return
			}
			d.merge(c, path, set, f)
		}
	case yaml.MappingNode:
		d.pairs(m, path, func(k, v *yaml.Node) {
			if !set[k.Value] {
				set[k.Value] = true
				f(k, v)
			}
		})
	default:
		d.fail(path, m.Line, "<<: want a mapping or a list of mappings to merge")
	}
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

// Lines maps the field paths of a document to the lines where they are
// written (a key's line; a list item's own line), so that a problem found
// later, by validation, can still point into the text.
func Lines(n *yaml.Node) map[string]int {
	out := map[string]int{}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				p := joinKey(path, n.Content[i].Value)
				if _, ok := out[p]; !ok {
					out[p] = n.Content[i].Line
				}
				walk(n.Content[i+1], p)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				p := path + "[" + strconv.Itoa(i) + "]"
				out[p] = c.Line
				walk(c, p)
			}
		}
	}
	walk(n, "")
	return out
}

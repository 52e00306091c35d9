package config

import (
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"
)

// Aliases let a small file refer to one subtree many times over. To stop a
// file from expanding into billions of values, it may decode to at most
// aliasFactor times the values it holds, plus aliasSlack.
const (
	aliasFactor = 4
	aliasSlack  = 1 << 16
)

// decoder fills a Config from a YAML node tree. It is strict (an unknown
// key, a repeated key or a value of the wrong type is a problem with its
// place), keeps going after a problem so that every one is reported,
// expands ${VAR} in string scalars, and records where each key path stands.
//
// A struct created inside a list or behind a pointer starts from its
// default (elementDefaults), so the keys a file sets land on top of the
// defaults of the keys it leaves out. A null value ("key:" or "key: ~")
// leaves the default in place, except that it sets a pointer (an optional
// block such as autoscale) to nil.
type decoder struct {
	file   string
	lookup func(string) (string, bool)
	pos    positions
	errs   Errors
	// failed holds the key paths that did not decode; Validate's problems
	// at or under them are not reported, as they would only repeat them.
	failed []string
	// budget is how many more values may be decoded (see aliasFactor).
	budget int
	// active holds the mappings being decoded, to catch a merge (<<) of a
	// mapping into itself.
	active map[*yaml.Node]bool
}

func newDecoder(file string, lookup func(string) (string, bool), root *yaml.Node) *decoder {
	return &decoder{
		file:   file,
		lookup: lookup,
		pos:    positions{"": {1, 1}},
		budget: aliasFactor*countNodes(root) + aliasSlack,
		active: make(map[*yaml.Node]bool),
	}
}

// countNodes counts the nodes of a tree without following aliases.
func countNodes(root *yaml.Node) int {
	if root == nil {
		return 0
	}
	n := 0
	stack := []*yaml.Node{root}
	for len(stack) > 0 {
		top := stack[len(stack)-1]
		stack = append(stack[:len(stack)-1], top.Content...)
		n++
	}
	return n
}

// fail records a problem at n.
func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if path != "" {
		msg = path + ": " + msg
	}
	line, col := n.Line, n.Column
	if line < 1 {
		line, col = 1, 1
	}
	d.errs = append(d.errs, Error{File: d.file, Line: line, Col: col, Msg: msg})
	d.failed = append(d.failed, path)
}

// value decodes n into v, which must be addressable.
func (d *decoder) value(n *yaml.Node, v reflect.Value, path string) {
	if d.budget--; d.budget < 0 {
		if d.budget == -1 {
			// Recorded against the root: the Config is half decoded, so
			// Parse does not validate it.
			d.fail(n, "", "aliases (*name) expand the file too much; repeat fewer of them")
		}
		return
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			d.fail(n, path, "alias *%s refers to nothing", n.Value)
			return
		}
		n = n.Alias
	}
	tag := n.ShortTag()
	if !strings.HasPrefix(tag, "!!") {
		d.fail(n, path, "unsupported tag %s; remove it", tag)
		return
	}
	if n.Kind == yaml.ScalarNode && tag == "!!null" {
		if v.Kind() == reflect.Pointer {
			v.SetZero()
		}
		return
	}
	if u, ok := v.Addr().Interface().(yaml.Unmarshaler); ok {
		if n = d.expand(n, path); n == nil {
			return
		}
		if err := u.UnmarshalYAML(n); err != nil {
			d.fail(n, path, "%v", err)
		}
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(newDefault(v.Type().Elem()))
		}
		d.value(n, v.Elem(), path)
	case reflect.Struct:
		d.structure(n, v, path)
	case reflect.Slice:
		d.list(n, v, path)
	case reflect.Map:
		d.dict(n, v, path)
	default:
		d.scalar(n, v, path)
	}
}

// structure decodes a mapping into a struct, by the fields' yaml names.
func (d *decoder) structure(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		if path == "" {
			d.fail(n, path, "the file must be a mapping of keys such as listen: and pools:, got %s", describe(n))
			return
		}
		d.fail(n, path, "want a mapping (key: value lines, or {key: value}), got %s", describe(n))
		return
	}
	if d.active[n] {
		d.fail(n, path, "this mapping contains itself (through an alias or <<)")
		return
	}
	d.active[n] = true
	defer delete(d.active, n)

	fields := fieldsOf(v.Type())
	// Merged mappings (<<: *name) go first, so the mapping's own keys win.
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].ShortTag() == "!!merge" {
			d.merge(n.Content[i+1], v, path)
		}
	}
	seen := make(map[string]*yaml.Node, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.ShortTag() == "!!merge" {
			continue
		}
		if k.Kind != yaml.ScalarNode {
			d.fail(k, path, "a key must be a plain name, got %s", describe(k))
			continue
		}
		sub := joinPath(path, k.Value)
		if first, dup := seen[k.Value]; dup {
			d.fail(k, sub, "duplicate key; it is first set on line %d", first.Line)
			continue
		}
		seen[k.Value] = k
		f, ok := fields.index[k.Value]
		if !ok {
			d.fail(k, sub, "unknown key; %s", suggest(k.Value, fields.names))
			continue
		}
		if target(val).Kind == yaml.ScalarNode {
			d.pos.set(sub, val)
		} else {
			d.pos.set(sub, k)
		}
		d.value(val, v.Field(f), sub)
	}
}

// merge applies the value of a << key: a mapping, or a list of mappings of
// which the earlier ones win.
func (d *decoder) merge(n *yaml.Node, v reflect.Value, path string) {
	n = target(n)
	var maps []*yaml.Node
	switch n.Kind {
	case yaml.MappingNode:
		maps = []*yaml.Node{n}
	case yaml.SequenceNode:
		for i := len(n.Content) - 1; i >= 0; i-- {
			maps = append(maps, n.Content[i])
		}
	default:
		d.fail(n, path, "<< merges a mapping or a list of mappings, got %s", describe(n))
		return
	}
	for _, m := range maps {
		if m = target(m); m.Kind != yaml.MappingNode {
			d.fail(m, path, "<< merges a mapping or a list of mappings, got %s", describe(m))
			continue
		}
		if d.budget--; d.budget < 0 {
			return
		}
		d.structure(m, v, path)
	}
}

// list decodes a sequence into a slice, each element starting from its
// type's default.
func (d *decoder) list(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.SequenceNode {
		d.fail(n, path, `want a list ([a, b], or lines starting with "- "), got %s`, describe(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, e := range n.Content {
		sub := fmt.Sprintf("%s[%d]", path, i)
		el := s.Index(i)
		el.Set(newDefault(el.Type()).Elem())
		d.pos.set(sub, e)
		d.value(e, el, sub)
	}
	v.Set(s)
}

// dict decodes a mapping into a map with string keys.
func (d *decoder) dict(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "want a mapping (NAME: value lines, or {NAME: value}), got %s", describe(n))
		return
	}
	m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
	seen := make(map[string]*yaml.Node, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.ShortTag() == "!!merge" {
			d.fail(k, path, "a key must be a plain name, got %s", describe(k))
			continue
		}
		sub := joinPath(path, k.Value)
		if first, dup := seen[k.Value]; dup {
			d.fail(k, sub, "duplicate key; it is first set on line %d", first.Line)
			continue
		}
		seen[k.Value] = k
		d.pos.set(sub, val)
		ev := reflect.New(v.Type().Elem()).Elem()
		d.value(val, ev, sub)
		m.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), ev)
	}
	v.Set(m)
}

// scalar decodes a string, number or boolean.
func (d *decoder) scalar(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.fail(n, path, "want %s, got %s", wantKind(v.Kind()), describe(n))
		return
	}
	if n = d.expand(n, path); n == nil {
		return
	}
	tag := n.ShortTag()
	switch v.Kind() {
	case reflect.String:
		// Any scalar reads as its text, so port: 8080 fills a string.
		v.SetString(n.Value)
	case reflect.Bool:
		var b bool
		if tag != "!!bool" || n.Decode(&b) != nil {
			d.fail(n, path, "want true or false, got %s", describe(n))
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		var i int64
		if tag != "!!int" || n.Decode(&i) != nil || v.OverflowInt(i) {
			d.fail(n, path, "want a whole number, got %s%s", describe(n), quotedHint(n))
			return
		}
		v.SetInt(i)
	case reflect.Float32, reflect.Float64:
		var f float64
		if tag != "!!int" && tag != "!!float" || n.Decode(&f) != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			d.fail(n, path, "want a number, got %s%s", describe(n), quotedHint(n))
			return
		}
		v.SetFloat(f)
	default:
		panic(fmt.Sprintf("config: no decoding for %s at %s", v.Type(), path))
	}
}

// expand returns n with ${VAR} expanded, or nil after recording a problem.
// Only string scalars are expanded, never keys; the result is a scalar
// however it reads, so an environment variable cannot add YAML structure.
func (d *decoder) expand(n *yaml.Node, path string) *yaml.Node {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		return n
	}
	s, err := expandEnv(n.Value, d.lookup)
	if err != nil {
		d.fail(n, path, "%v", err)
		return nil
	}
	if s == n.Value {
		return n
	}
	cp := *n
	cp.Value = s
	if cp.Style&yaml.TaggedStyle == 0 {
		// A value from the environment reads as what it holds, quoted or
		// not (inside [...] or {...} it must be quoted), so replicas:
		// "${REPLICAS}" is a number; an empty value stays "".
		cp.Style = 0
		cp.Tag = (&yaml.Node{Kind: yaml.ScalarNode, Value: s}).ShortTag()
		if cp.Tag == "!!null" {
			cp.Tag = "!!str"
		}
	}
	return &cp
}

// target follows an alias to what it refers to.
func target(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		return n.Alias
	}
	return n
}

// describe names n in a message.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	v := n.Value
	if r := []rune(v); len(r) > 40 {
		v = string(r[:37]) + "..."
	}
	return strconv.Quote(v)
}

func wantKind(k reflect.Kind) string {
	switch k {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Float32, reflect.Float64:
		return "a number"
	default:
		return "a whole number"
	}
}

// quotedHint explains a quoted number, which YAML reads as a string.
func quotedHint(n *yaml.Node) string {
	if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) == 0 {
		return ""
	}
	switch (&yaml.Node{Kind: yaml.ScalarNode, Value: n.Value}).ShortTag() {
	case "!!int", "!!float":
		return "; remove the quotes"
	}
	return ""
}

// fieldSet is a struct type's keys.
type fieldSet struct {
	index map[string]int // yaml name -> field index
	names []string       // yaml names in declaration order
}

var fieldSets sync.Map // reflect.Type -> *fieldSet

func fieldsOf(t reflect.Type) *fieldSet {
	if fs, ok := fieldSets.Load(t); ok {
		return fs.(*fieldSet)
	}
	fs := &fieldSet{index: make(map[string]int)}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "" || name == "-" {
			continue
		}
		fs.index[name] = i
		fs.names = append(fs.names, name)
	}
	fieldSets.Store(t, fs)
	return fs
}

// suggest names the key the user most likely meant, or lists the keys.
func suggest(key string, names []string) string {
	norm := func(s string) string {
		return strings.NewReplacer("_", "", "-", "").Replace(strings.ToLower(s))
	}
	best, bestDist := "", 3
	for _, name := range names {
		dist := editDistance(key, name)
		if norm(key) == norm(name) {
			dist = 0
		}
		if dist < bestDist {
			best, bestDist = name, dist
		}
	}
	if best != "" && (bestDist == 0 || bestDist < len(key)/2) {
		return fmt.Sprintf("did you mean %q?", best)
	}
	return "valid keys here: " + strings.Join(names, ", ")
}

// editDistance is the Levenshtein distance of a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

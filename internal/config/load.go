package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Load reads and parses the config file at path; see Parse.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes a config file's contents onto Default, expanding ${VAR}
// from the process environment, and validates the result. path names the
// file in errors and becomes Config.Path.
//
// On any problem it returns a nil Config and an Errors holding every
// problem found, each with its line and column: YAML syntax, unknown or
// repeated keys, values of the wrong type, ${VAR} references to unset
// variables, and everything Validate checks.
func Parse(path string, data []byte) (*Config, error) {
	return parse(path, data, os.LookupEnv)
}

func parse(path string, data []byte, lookup func(string) (string, bool)) (*Config, error) {
	root, err := parseYAML(path, data)
	if err != nil {
		return nil, Errors{*err}
	}
	c := Default()
	c.Path = path
	d := newDecoder(path, lookup, root)
	if root != nil {
		d.pos.set("", root)
		d.value(root, reflect.ValueOf(c).Elem(), "")
	}
	c.pos = d.pos
	c.followInterval()
	errs := d.errs
	if !slices.Contains(d.failed, "") {
		// Validate what did decode; with the root failed, nothing did.
		errs = append(errs, c.check(d.failed)...)
	}
	if errs = sortErrors(errs); len(errs) > 0 {
		return nil, errs
	}
	return c, nil
}

// followInterval gives a pool whose file sets a health check's interval
// but not its timeout a timeout no longer than the interval, so
// health_check: {interval: 1s} alone is valid: the default 2s timeout
// would otherwise outlast the interval and be rejected. A timeout the file
// sets is kept, and checked as it is.
func (c *Config) followInterval() {
	for i := range c.Pools {
		hc := &c.Pools[i].HealthCheck
		if _, set := c.pos[fmt.Sprintf("pools[%d].health_check.timeout", i)]; set {
			continue
		}
		if hc.Interval > 0 && hc.Timeout > hc.Interval {
			hc.Timeout = hc.Interval
		}
	}
}

// parseYAML returns the root node of the one document in data, or nil for
// an empty file.
func parseYAML(path string, data []byte) (*yaml.Node, *Error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, syntaxError(path, data, err)
	}
	// Empty documents after the first (a trailing "---") are harmless.
	for {
		var next yaml.Node
		err := dec.Decode(&next)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, syntaxError(path, data, err)
		}
		if len(next.Content) > 0 && !isEmpty(next.Content[0]) {
			line, col := max(next.Line, 1), max(next.Column, 1)
			return nil, &Error{File: path, Line: line, Col: col, Msg: `a config file holds one YAML document; remove the "---" and what follows`}
		}
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	return doc.Content[0], nil
}

// isEmpty reports whether n is an empty document's content.
func isEmpty(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" && n.Value == ""
}

// syntaxError turns a YAML parser error ("yaml: line 3: did not find
// expected key") into an Error. The parser gives no column, and gives the
// line 0-based for its "did not find expected" errors; where it gives no
// line, the place is found in data when the message allows.
func syntaxError(path string, data []byte, err error) *Error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line, col := 0, 1
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, after, ok := strings.Cut(rest, ": "); ok {
			if l, err := strconv.Atoi(n); err == nil && l >= 0 {
				line, msg = l, after
				if strings.HasPrefix(msg, "did not find expected") {
					line++
				}
			}
		}
	}
	if line == 0 {
		line, col = locate(data, msg)
	}
	return &Error{File: path, Line: max(line, 1), Col: col, Msg: "invalid YAML: " + msg}
}

// locate finds what a YAML error without a line is about: an unknown
// anchor, or the first byte the parser refuses. It returns 1, 1 when it
// cannot tell.
func locate(data []byte, msg string) (line, col int) {
	at := -1
	if name, ok := strings.CutPrefix(msg, "unknown anchor '"); ok {
		name, _, _ = strings.Cut(name, "'")
		at = bytes.Index(data, []byte("*"+name))
	} else {
		for i := 0; i < len(data); {
			r, size := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && size <= 1 || r < ' ' && r != '\t' && r != '\n' && r != '\r' || r == 0x7f {
				at = i
				break
			}
			i += size
		}
	}
	if at < 0 {
		return 1, 1
	}
	before := data[:at]
	line = bytes.Count(before, []byte("\n")) + 1
	col = utf8.RuneCount(before[bytes.LastIndexByte(before, '\n')+1:]) + 1
	return line, col
}

package config

import (
	"strings"

	"gopkg.in/yaml.v3"
)

// positions maps a key path ("pools[0].backends[1].url") to its place in the
// file: the value's place for a scalar, the key's for a mapping or list, the
// item's for a list item. The root's path is "".
type positions map[string]pos

type pos struct{ line, col int }

func (p positions) set(path string, n *yaml.Node) {
	if n.Line > 0 {
		p[path] = pos{n.Line, n.Column}
	}
}

// lookup returns the place of path or, when the file does not set it (the
// value is a default), of its nearest enclosing key that the file sets.
// Without any, it returns the zero pos (a Config built in code).
func (p positions) lookup(path string) pos {
	for {
		if at, ok := p[path]; ok {
			return at
		}
		if path == "" {
			return pos{}
		}
		path = parentPath(path)
	}
}

// parentPath strips the last ".key" or "[i]" from path.
func parentPath(path string) string {
	if strings.HasSuffix(path, "]") {
		if i := strings.LastIndexByte(path, '['); i >= 0 {
			return path[:i]
		}
	}
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[:i]
	}
	return ""
}

// within reports whether path is at or under base.
func within(path, base string) bool {
	if base == "" || path == base {
		return true
	}
	return strings.HasPrefix(path, base) && (path[len(base)] == '.' || path[len(base)] == '[')
}

// joinPath appends key to the path of its mapping.
func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

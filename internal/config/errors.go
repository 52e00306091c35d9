package config

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Error is one problem in a configuration. Line and Col are 1-based and
// point at the offending value, or at the nearest enclosing key when the
// value was left out; both are 0 for a Config built in code.
type Error struct {
	// File is the config's path ("" when built in code or parsed without one).
	File string
	// Line and Col locate the problem in File.
	Line, Col int
	// Msg names the key path and says what is wrong and what to do, e.g.
	// `pools[0].balancer: unknown balancer "p2c-ewma"; want one of: …`.
	Msg string
}

// Error formats e as FILE:LINE:COL: message, dropping the parts it lacks.
func (e Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(":")
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, "%d:%d:", e.Line, e.Col)
	}
	if b.Len() > 0 {
		b.WriteString(" ")
	}
	// One problem, one line, whatever the file's values hold.
	b.WriteString(oneLine.Replace(e.Msg))
	return b.String()
}

var oneLine = strings.NewReplacer("\n", `\n`, "\r", `\r`)

// Errors is every problem found in a configuration, in file order. Load,
// Parse and Validate return it (as an error) when there is at least one.
type Errors []Error

// Error joins the problems, one per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// sortErrors orders es by position, keeping the order of problems at the
// same place, and drops exact repeats (an alias used twice repeats the
// problems of what it refers to).
func sortErrors(es Errors) Errors {
	slices.SortStableFunc(es, func(a, b Error) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col))
	})
	return slices.Compact(es)
}

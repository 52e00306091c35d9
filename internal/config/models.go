package config

import (
	"errors"
	"path"
	"strings"
)

// MatchModel reports whether model matches pattern: a model name, or a glob
// in the syntax of path.Match where, unlike path.Match, * also matches "/",
// so "*" matches "meta-llama/Llama-3-8B" and "meta-llama/*" matches it too.
// ? matches one character, [a-z] a class, and \ escapes the next character.
// A malformed pattern matches nothing; Validate rejects one.
func MatchModel(pattern, model string) bool {
	if strings.IndexByte(model, 0) >= 0 {
		return false
	}
	if strings.IndexByte(model, '/') < 0 {
		// Without a "/" in the model, path.Match already means the same,
		// and costs no allocation.
		ok, err := path.Match(pattern, model)
		return ok && err == nil
	}
	ok, err := path.Match(noSlash(pattern), noSlash(model))
	return ok && err == nil
}

// checkGlob returns why pattern is not a valid model glob, or nil.
func checkGlob(pattern string) error {
	if strings.IndexByte(pattern, 0) >= 0 {
		return errors.New("contains a NUL byte")
	}
	if _, err := path.Match(noSlash(pattern), ""); err != nil {
		return errors.New(`malformed glob; * matches any run of characters, ? one, [a-z] a class, \ escapes`)
	}
	return nil
}

// noSlash replaces "/" with NUL, which path.Match's * crosses and which no
// model name holds.
func noSlash(s string) string {
	if strings.IndexByte(s, '/') < 0 {
		return s
	}
	return strings.ReplaceAll(s, "/", "\x00")
}

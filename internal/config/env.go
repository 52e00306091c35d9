package config

import (
	"fmt"
	"strings"
)

// expandEnv replaces ${NAME} and ${NAME:-default} in s with values from
// lookup. ${NAME} of an unset variable is an error, so a typo cannot quietly
// turn a secret into ""; ${NAME:-default} gives default when NAME is unset
// or empty. "$${" is a literal "${"; any other "$" is kept as it is.
func expandEnv(s string, lookup func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "${") {
		return s, nil
	}
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '$')
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		b.WriteString(s[:i])
		s = s[i:]
		switch {
		case strings.HasPrefix(s, "$${"):
			b.WriteString("${")
			s = s[3:]
		case strings.HasPrefix(s, "${"):
			end := strings.IndexByte(s, '}')
			if end < 0 {
				return "", fmt.Errorf(`unterminated "${"; close it with "}", or write "$${" for a literal "${"`)
			}
			v, err := lookupVar(s[2:end], lookup)
			if err != nil {
				return "", err
			}
			b.WriteString(v)
			s = s[end+1:]
		default:
			b.WriteByte('$')
			s = s[1:]
		}
	}
}

// lookupVar resolves the inside of one ${...}.
func lookupVar(ref string, lookup func(string) (string, bool)) (string, error) {
	name, def, hasDef := strings.Cut(ref, ":-")
	if !validVarName(name) {
		return "", fmt.Errorf("invalid reference ${%s}: want ${NAME} or ${NAME:-default}, NAME made of letters, digits and _", ref)
	}
	v, ok := lookup(name)
	switch {
	case hasDef && v == "":
		return def, nil
	case !ok:
		return "", fmt.Errorf("environment variable %s is not set; set it, or write ${%s:-default}", name, name)
	}
	return v, nil
}

func validVarName(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Model servers (vLLM, SGLang, TGI, llama.cpp) read a request's fields by
// their exact names, while encoding/json matches "MODEL" to a field tagged
// "model" and lets the last duplicate win. A gateway that decided routing or
// accounting with encoding/json could be shown one model and forward another
// ({"model":"allowed","MODEL":"forbidden"} on a server that reads the
// first). So the fields that route and account are read here by exact name,
// and a body that names one of them twice, or in another case, is refused.

// routingFields are the top-level members that decide where a request goes
// and what it may cost.
var routingFields = [...]string{"model", "stream", "stream_options", "max_tokens", "max_completion_tokens", "n"}

// promptFields carry the input whose size estimates prompt tokens.
var promptFields = [...]string{"messages", "prompt", "input", "instructions", "suffix", "tools"}

// errAmbiguous marks a body that names a routing field twice or in another
// case.
var errAmbiguous = errors.New("ambiguous routing field")

// PeekRequest reads the fields of an OpenAI-style JSON request body that
// routing and accounting need, by exact member name, in one validating pass
// that allocates nothing proportional to the body: the prompt-bearing fields
// are measured, not decoded. The error, for a body that is not a JSON object,
// whose routing fields have the wrong types, or that repeats a routing field
// (in any case), is meant for a 400 response.
func PeekRequest(body []byte) (RequestInfo, error) {
	ri := RequestInfo{N: 1}
	var (
		maxTokens, maxCompletion       int64
		hasMaxTokens, hasMaxCompletion bool
	)
	err := members(body, func(name, value []byte) error {
		if f, ok := routingField(name); ok {
			if f != string(name) {
				return fmt.Errorf("%w: %q is not a field name model servers read; use %q", errAmbiguous, name, f)
			}
		}
		switch string(name) {
		case "model":
			return decodeString("model", value, &ri.Model)
		case "stream":
			return decodeBool("stream", value, &ri.Stream)
		case "stream_options":
			if string(value) == "null" {
				return nil
			}
			return members(value, func(opt, v []byte) error {
				if string(opt) == "include_usage" {
					return decodeBool("stream_options.include_usage", v, &ri.IncludeUsage)
				}
				if equalFold(opt, "include_usage") {
					return fmt.Errorf("%w: stream_options.%q; use \"include_usage\"", errAmbiguous, opt)
				}
				return nil
			})
		case "max_tokens":
			hasMaxTokens = string(value) != "null"
			return decodeInt("max_tokens", value, &maxTokens)
		case "max_completion_tokens":
			hasMaxCompletion = string(value) != "null"
			return decodeInt("max_completion_tokens", value, &maxCompletion)
		case "n":
			return decodeInt("n", value, &ri.N)
		default:
			for _, f := range promptFields {
				if string(name) == f {
					ri.PromptBytes += int64(len(value))
				}
			}
		}
		return nil
	})
	if err != nil {
		return RequestInfo{}, fmt.Errorf("read request body: %w", err)
	}
	switch {
	case hasMaxCompletion:
		ri.MaxTokens = maxCompletion
	case hasMaxTokens:
		ri.MaxTokens = maxTokens
	}
	if ri.MaxTokens < 0 {
		return RequestInfo{}, errors.New("read request body: max_tokens must not be negative")
	}
	if ri.N < 1 {
		return RequestInfo{}, errors.New("read request body: n must be at least 1")
	}
	return ri, nil
}

// routingField returns the routing field that name spells in any case.
func routingField(name []byte) (string, bool) {
	for _, f := range routingFields {
		if equalFold(name, f) {
			return f, true
		}
	}
	return "", false
}

// equalFold reports whether b and s are equal under Unicode case folding,
// without converting b to a string on the common, ASCII path.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c, d := b[i], s[i]
		if c >= utf8.RuneSelf || d >= utf8.RuneSelf {
			return strings.EqualFold(string(b), s)
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if 'A' <= d && d <= 'Z' {
			d += 'a' - 'A'
		}
		if c != d {
			return false
		}
	}
	return true
}

// decodeString decodes the JSON string value into dst. A string without
// escapes (every model name in practice) is copied as it stands; anything
// else goes through encoding/json, for its unescaping and its errors.
func decodeString(name string, value []byte, dst *string) error {
	if string(value) == "null" {
		return nil
	}
	if n := len(value); n >= 2 && value[0] == '"' && value[n-1] == '"' && bytes.IndexByte(value[1:n-1], '\\') < 0 {
		*dst = string(value[1 : n-1])
		return nil
	}
	var s string
	if err := json.Unmarshal(value, &s); err != nil {
		return fmt.Errorf("field %q: %w", name, err)
	}
	*dst = s
	return nil
}

// decodeBool decodes the JSON boolean value into dst.
func decodeBool(name string, value []byte, dst *bool) error {
	switch string(value) {
	case "null":
	case "true":
		*dst = true
	case "false":
		*dst = false
	default:
		var b bool
		if err := json.Unmarshal(value, &b); err != nil {
			return fmt.Errorf("field %q: %w", name, err)
		}
		*dst = b
	}
	return nil
}

func decodeInt(name string, value []byte, dst *int64) error {
	if string(value) == "null" {
		return nil
	}
	v, err := strconv.ParseInt(string(value), 10, 64)
	if err != nil {
		return fmt.Errorf("field %q must be an integer", name)
	}
	*dst = v
	return nil
}

// Field returns the value at a dot-separated path of exact member names in a
// JSON body: a string's content, or another value's JSON text; "" when the
// path is absent or the body is not an object.
func Field(body []byte, path string) string {
	raw := body
	for key := range strings.SplitSeq(path, ".") {
		var found []byte
		err := members(raw, func(name, value []byte) error {
			if string(name) == key {
				found = value
			}
			return nil
		})
		if err != nil || found == nil {
			return ""
		}
		raw = found
	}
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
	}
	return string(raw)
}

// members calls fn with each member of the JSON object in doc, in order:
// its name (unescaped) and its value's JSON text, both slices of doc (or
// scratch) that fn must not keep: a name is not copied into a string. A routing field seen
// twice, in any spelling, is an error. doc must be one valid JSON object
// with nothing but whitespace around it.
func members(doc []byte, fn func(name, value []byte) error) error {
	if !json.Valid(doc) {
		return errors.New("not valid JSON")
	}
	s := scanner{b: doc}
	s.space()
	if !s.consume('{') {
		return errors.New("not a JSON object")
	}
	var seen [len(routingFields)]bool
	s.space()
	if s.consume('}') {
		return nil
	}
	for {
		s.space()
		raw := s.str()
		name := raw[1 : len(raw)-1]
		if bytes.IndexByte(raw, '\\') >= 0 {
			var esc string
			_ = json.Unmarshal(raw, &esc) // valid JSON: cannot fail
			name = []byte(esc)
		}
		if f, ok := routingField(name); ok {
			i := indexOf(f)
			if seen[i] {
				return fmt.Errorf("%w: %q appears more than once", errAmbiguous, f)
			}
			seen[i] = true
		}
		s.space()
		s.consume(':')
		s.space()
		start := s.i
		s.value()
		if err := fn(name, doc[start:s.i]); err != nil {
			return err
		}
		s.space()
		if s.consume('}') {
			return nil
		}
		s.consume(',')
	}
}

func indexOf(f string) int {
	for i, g := range routingFields {
		if g == f {
			return i
		}
	}
	return -1
}

// scanner walks JSON text already known to be valid.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) consume(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// str returns the string token at the cursor, quotes included.
func (s *scanner) str() []byte {
	start := s.i
	s.i++ // opening quote
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '\\':
			s.i += 2
		case '"':
			s.i++
			return s.b[start:s.i]
		default:
			s.i++
		}
	}
	return s.b[start:s.i]
}

// value skips the value at the cursor.
func (s *scanner) value() {
	if s.i >= len(s.b) {
		return
	}
	switch s.b[s.i] {
	case '"':
		s.str()
	case '{', '[':
		depth := 0
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case '"':
				s.str()
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					s.i++
					return
				}
			}
			s.i++
		}
	default: // number, true, false, null
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return
			}
			s.i++
		}
	}
}

// AddFields returns body, a JSON object PeekRequest accepted, with the
// members of fields (valid JSON member text such as
// `"max_tokens":1024`) appended. It does not check that a member is new.
func AddFields(body []byte, fields ...string) []byte {
	end := bytes.LastIndexByte(body, '}')
	if end < 0 || len(fields) == 0 {
		return body
	}
	empty := len(bytes.TrimSpace(body[bytes.IndexByte(body, '{')+1:end])) == 0
	out := make([]byte, 0, len(body)+64)
	out = append(out, body[:end]...)
	for i, f := range fields {
		if i > 0 || !empty {
			out = append(out, ',')
		}
		out = append(out, f...)
	}
	return append(out, body[end:]...)
}

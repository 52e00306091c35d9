package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"unicode/utf8"
)

// Key identifies a cacheable request: its pool, path, canonical JSON body
// and, when the pool caches per tenant, its tenant. The zero Key is not
// valid.
type Key struct {
	pool string
	sum  [sha256.Size]byte
}

// Pool is the pool the key belongs to (the label of the cache metrics).
func (k Key) Pool() string { return k.pool }

// String is the key's hash in hex, safe to log: it reveals nothing of the
// request.
func (k Key) String() string { return hex.EncodeToString(k.sum[:]) }

// KeyFor returns the cache key of a request to pool at path with a JSON
// body. tenant is "" unless the pool caches per tenant (cache.per_tenant),
// in which case tenants never share entries.
//
// The body is canonicalized: object members sorted by name, insignificant
// white space removed, strings and numbers kept byte for byte (1.0 and 1
// stay different, as a backend may treat them differently). So
// {"b":1,"a":2} and { "a":2, "b":1 } share an entry, while any difference
// in a value, including "stream", does not. Bodies that are not one valid
// JSON value, that nest deeper than 128 levels, that repeat a member name
// (backends disagree on which one wins, so caching them could serve one
// request's answer to another) or that contain invalid UTF-8 get an error:
// such requests are not cached.
func KeyFor(pool, path string, body []byte, tenant string) (Key, error) {
	c := canonPool.Get().(*canonicalizer)
	defer c.release()
	c.reset(body)
	// The fields are length-prefixed so that no two different
	// (pool, path, tenant, body) tuples hash the same input.
	c.out = append(c.out, "sluice-cache-v1"...)
	for _, f := range [...]string{pool, path, tenant} {
		c.out = binary.AppendUvarint(c.out, uint64(len(f)))
		c.out = append(c.out, f...)
	}
	if err := c.document(); err != nil {
		return Key{}, fmt.Errorf("cache key: %w", err)
	}
	return Key{pool: pool, sum: sha256.Sum256(c.out)}, nil
}

// Canonicalize returns the canonical form of a JSON document, as KeyFor
// hashes it.
func Canonicalize(body []byte) ([]byte, error) {
	c := &canonicalizer{}
	c.reset(body)
	if err := c.document(); err != nil {
		return nil, err
	}
	return c.out, nil
}

var canonPool = sync.Pool{New: func() any { return &canonicalizer{} }}

// maxDepth bounds nesting, and with it the recursion of the canonicalizer.
const maxDepth = 128

var (
	errSyntax    = errors.New("body is not valid JSON")
	errDepth     = fmt.Errorf("body nests deeper than %d levels", maxDepth)
	errDuplicate = errors.New("body repeats a member name")
	errUTF8      = errors.New("body has invalid UTF-8")
)

// canonicalizer writes the canonical form of one JSON document to out. It
// is a small recursive-descent parser: it validates as it goes and never
// builds a tree.
type canonicalizer struct {
	in      []byte
	pos     int
	depth   int
	out     []byte
	members []member // a stack: each open object's members
	scratch []byte   // for reordering members
}

// member is one object member already written to out[start:end] (name,
// colon and value).
type member struct {
	name       []byte // the decoded name
	start, end int
}

// maxPooled is the largest buffer kept for reuse, so one huge body does not
// pin its memory in the pool.
const maxPooled = 1 << 20

func (c *canonicalizer) release() {
	c.in = nil
	if cap(c.out) > maxPooled || cap(c.scratch) > maxPooled {
		return
	}
	clear(c.members[:cap(c.members)])
	canonPool.Put(c)
}

func (c *canonicalizer) reset(in []byte) {
	c.in, c.pos, c.depth = in, 0, 0
	c.out = c.out[:0]
	c.members = c.members[:0]
}

func (c *canonicalizer) document() error {
	if err := c.value(); err != nil {
		return err
	}
	c.skipSpace()
	if c.pos != len(c.in) {
		return errSyntax
	}
	return nil
}

func (c *canonicalizer) skipSpace() {
	for c.pos < len(c.in) {
		switch c.in[c.pos] {
		case ' ', '\t', '\n', '\r':
			c.pos++
		default:
			return
		}
	}
}

func (c *canonicalizer) value() error {
	c.skipSpace()
	if c.pos >= len(c.in) {
		return errSyntax
	}
	switch b := c.in[c.pos]; {
	case b == '{':
		return c.object()
	case b == '[':
		return c.array()
	case b == '"':
		start := c.pos
		if _, err := c.string(); err != nil {
			return err
		}
		c.out = append(c.out, c.in[start:c.pos]...)
		return nil
	case b == 't':
		return c.literal("true")
	case b == 'f':
		return c.literal("false")
	case b == 'n':
		return c.literal("null")
	case b == '-' || (b >= '0' && b <= '9'):
		return c.number()
	default:
		return errSyntax
	}
}

func (c *canonicalizer) literal(lit string) error {
	if !bytes.HasPrefix(c.in[c.pos:], []byte(lit)) {
		return errSyntax
	}
	c.pos += len(lit)
	c.out = append(c.out, lit...)
	return nil
}

// number copies a JSON number, checking its grammar.
func (c *canonicalizer) number() error {
	start := c.pos
	if c.in[c.pos] == '-' {
		c.pos++
	}
	switch {
	case c.pos < len(c.in) && c.in[c.pos] == '0':
		c.pos++
	case c.digits() == 0:
		return errSyntax
	}
	if c.pos < len(c.in) && c.in[c.pos] == '.' {
		c.pos++
		if c.digits() == 0 {
			return errSyntax
		}
	}
	if c.pos < len(c.in) && (c.in[c.pos] == 'e' || c.in[c.pos] == 'E') {
		c.pos++
		if c.pos < len(c.in) && (c.in[c.pos] == '+' || c.in[c.pos] == '-') {
			c.pos++
		}
		if c.digits() == 0 {
			return errSyntax
		}
	}
	c.out = append(c.out, c.in[start:c.pos]...)
	return nil
}

func (c *canonicalizer) digits() int {
	n := 0
	for c.pos < len(c.in) && c.in[c.pos] >= '0' && c.in[c.pos] <= '9' {
		c.pos++
		n++
	}
	return n
}

// plain marks the bytes a string may hold that need no attention: printable
// ASCII other than the quote and the backslash.
var plain = func() (t [256]bool) {
	for b := 0x20; b < 0x80; b++ {
		t[b] = b != '"' && b != '\\'
	}
	return t
}()

// string checks the string starting at c.pos and moves past it. It reports
// whether the string has escapes.
func (c *canonicalizer) string() (escaped bool, err error) {
	in := c.in
	i := c.pos + 1 // past the opening quote
	start := i
	ascii := true
	for {
		for i < len(in) && plain[in[i]] {
			i++
		}
		if i >= len(in) {
			return false, errSyntax
		}
		switch b := in[i]; {
		case b == '"':
			if !ascii && !utf8.Valid(in[start:i]) {
				return false, errUTF8
			}
			c.pos = i + 1
			return escaped, nil
		case b == '\\':
			escaped = true
			if i+1 >= len(in) {
				return false, errSyntax
			}
			switch in[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(in) {
					return false, errSyntax
				}
				for _, h := range in[i+2 : i+6] {
					if !isHex(h) {
						return false, errSyntax
					}
				}
				i += 6
			default:
				return false, errSyntax
			}
		case b < 0x20:
			return false, errSyntax
		default: // b >= 0x80, checked as UTF-8 at the end
			ascii = false
			i++
		}
	}
}

func isHex(b byte) bool {
	return (b >= '0' && b <= '9') || (b >= 'a' && b <= 'f') || (b >= 'A' && b <= 'F')
}

func (c *canonicalizer) array() error {
	if c.depth++; c.depth > maxDepth {
		return errDepth
	}
	c.pos++
	c.out = append(c.out, '[')
	c.skipSpace()
	if c.pos < len(c.in) && c.in[c.pos] == ']' {
		c.pos++
	} else {
		for {
			if err := c.value(); err != nil {
				return err
			}
			c.skipSpace()
			if c.pos >= len(c.in) {
				return errSyntax
			}
			if c.in[c.pos] == ']' {
				c.pos++
				break
			}
			if c.in[c.pos] != ',' {
				return errSyntax
			}
			c.pos++
			c.out = append(c.out, ',')
		}
	}
	c.out = append(c.out, ']')
	c.depth--
	return nil
}

func (c *canonicalizer) object() error {
	if c.depth++; c.depth > maxDepth {
		return errDepth
	}
	c.pos++
	c.out = append(c.out, '{')
	region := len(c.out)
	base := len(c.members)
	c.skipSpace()
	if c.pos < len(c.in) && c.in[c.pos] == '}' {
		c.pos++
	} else {
		for {
			c.skipSpace()
			if c.pos >= len(c.in) || c.in[c.pos] != '"' {
				return errSyntax
			}
			nameStart := c.pos
			escaped, err := c.string()
			if err != nil {
				return err
			}
			raw := c.in[nameStart:c.pos]
			name := raw[1 : len(raw)-1]
			if escaped {
				var s string
				if err := json.Unmarshal(raw, &s); err != nil {
					return errSyntax
				}
				name = []byte(s)
			}
			c.skipSpace()
			if c.pos >= len(c.in) || c.in[c.pos] != ':' {
				return errSyntax
			}
			c.pos++
			if len(c.members) > base {
				c.out = append(c.out, ',')
			}
			start := len(c.out)
			c.out = append(c.out, raw...)
			c.out = append(c.out, ':')
			if err := c.value(); err != nil {
				return err
			}
			c.members = append(c.members, member{name: name, start: start, end: len(c.out)})
			c.skipSpace()
			if c.pos >= len(c.in) {
				return errSyntax
			}
			if c.in[c.pos] == '}' {
				c.pos++
				break
			}
			if c.in[c.pos] != ',' {
				return errSyntax
			}
			c.pos++
		}
	}
	if err := c.sortMembers(region, c.members[base:]); err != nil {
		return err
	}
	c.members = c.members[:base]
	c.out = append(c.out, '}')
	c.depth--
	return nil
}

// sortMembers puts the members in out[region:], written in input order
// and separated by commas, in name order.
func (c *canonicalizer) sortMembers(region int, ms []member) error {
	byName := func(a, b member) int { return bytes.Compare(a.name, b.name) }
	sorted := slices.IsSortedFunc(ms, byName)
	if !sorted {
		slices.SortFunc(ms, byName)
	}
	for i := 1; i < len(ms); i++ {
		if bytes.Equal(ms[i-1].name, ms[i].name) {
			return errDuplicate
		}
	}
	if sorted {
		return nil
	}
	c.scratch = append(c.scratch[:0], c.out[region:]...)
	c.out = c.out[:region]
	for i, m := range ms {
		if i > 0 {
			c.out = append(c.out, ',')
		}
		c.out = append(c.out, c.scratch[m.start-region:m.end-region]...)
	}
	return nil
}

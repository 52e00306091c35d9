package jobs

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// The first byte of an encoded job. Version 1 kept the fields as JSON;
// version 2 writes them in binary, which takes a fraction of the CPU (a
// job is encoded and decoded several times on its way through a store).
// Both decode.
const (
	codecV1      = 1
	codecVersion = 2
)

// maxEncodedBody bounds a body length read back from an encoding, so a
// corrupt length cannot make UnmarshalBinary allocate without limit.
const maxEncodedBody = 1 << 30

// Bits of the presence byte of version 2.
const (
	hasCreatedAt = 1 << iota
	hasStartedAt
	hasFinishedAt
	hasResult
	hasCancelRequested
	knownBits = 1<<iota - 1
)

// MarshalBinary encodes j for a store: a version byte, the job's fields,
// then the request body and the result body as raw bytes, each preceded by
// its length as a uvarint. The fields are strings (uvarint length and
// bytes), integers (varints), times (varint Unix nanoseconds, shown in
// UTC) and headers (a uvarint count of names, each with its count of
// values), in a fixed order after a byte saying which optional ones are
// present. Revision is not encoded.
func (j *Job) MarshalBinary() ([]byte, error) {
	var res []byte
	var flags byte
	if !j.CreatedAt.IsZero() {
		flags |= hasCreatedAt
	}
	if !j.StartedAt.IsZero() {
		flags |= hasStartedAt
	}
	if !j.FinishedAt.IsZero() {
		flags |= hasFinishedAt
	}
	if j.Result != nil {
		flags |= hasResult
		res = j.Result.Body
	}
	if j.CancelRequested {
		flags |= hasCancelRequested
	}
	strs := [...]string{j.ID, j.Tenant, j.Pool, string(j.Priority), string(j.Status), j.Error,
		j.CallbackURL, j.IdempotencyKey, j.TraceParent, j.RunID,
		j.Request.Method, j.Request.Path, j.Request.Host}
	size := 2 + 8*binary.MaxVarintLen64 + len(j.Request.Body) + len(res) +
		headerSize(j.Request.Header)
	for _, s := range strs {
		size += binary.MaxVarintLen64 + len(s)
	}
	if j.Result != nil {
		size += headerSize(j.Result.Header)
	}
	b := make([]byte, 0, size)
	b = append(b, codecVersion, flags)
	for _, s := range strs {
		b = appendString(b, s)
	}
	b = binary.AppendVarint(b, int64(j.Attempts))
	b = binary.AppendVarint(b, int64(j.CallbackAttempts))
	if flags&hasCreatedAt != 0 {
		b = binary.AppendVarint(b, j.CreatedAt.UnixNano())
	}
	if flags&hasStartedAt != 0 {
		b = binary.AppendVarint(b, j.StartedAt.UnixNano())
	}
	if flags&hasFinishedAt != 0 {
		b = binary.AppendVarint(b, j.FinishedAt.UnixNano())
	}
	b = appendHeader(b, j.Request.Header)
	if j.Result != nil {
		b = binary.AppendVarint(b, int64(j.Result.StatusCode))
		b = appendHeader(b, j.Result.Header)
	}
	b = binary.AppendUvarint(b, uint64(len(j.Request.Body)))
	b = append(b, j.Request.Body...)
	b = binary.AppendUvarint(b, uint64(len(res)))
	b = append(b, res...)
	return b, nil
}

func headerSize(h http.Header) int {
	n := binary.MaxVarintLen64
	for k, vs := range h {
		n += 2*binary.MaxVarintLen64 + len(k)
		for _, v := range vs {
			n += binary.MaxVarintLen64 + len(v)
		}
	}
	return n
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendHeader(b []byte, h http.Header) []byte {
	b = binary.AppendUvarint(b, uint64(len(h)))
	for k, vs := range h {
		b = appendString(b, k)
		b = binary.AppendUvarint(b, uint64(len(vs)))
		for _, v := range vs {
			b = appendString(b, v)
		}
	}
	return b
}

// errCorrupt is wrapped by every decoding error.
var errCorrupt = errors.New("corrupt job encoding")

// decoder reads an encoding front to back; the first error sticks.
type decoder struct {
	rest []byte
	err  error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: bad %s", errCorrupt, what)
	}
}

func (d *decoder) bytes(what string) []byte {
	if d.err != nil {
		return nil
	}
	n, k := binary.Uvarint(d.rest)
	if k <= 0 || n > maxEncodedBody || n > uint64(len(d.rest)-k) {
		d.fail(what + " length")
		return nil
	}
	part := d.rest[k : k+int(n)]
	d.rest = d.rest[k+int(n):]
	return part
}

func (d *decoder) string(what string) string { return string(d.bytes(what)) }

func (d *decoder) varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, k := binary.Varint(d.rest)
	if k <= 0 {
		d.fail(what)
		return 0
	}
	d.rest = d.rest[k:]
	return v
}

// count reads a uvarint count of items that take at least one byte each.
func (d *decoder) count(what string) int {
	if d.err != nil {
		return 0
	}
	n, k := binary.Uvarint(d.rest)
	if k <= 0 || n > uint64(len(d.rest)-k) {
		d.fail(what + " count")
		return 0
	}
	d.rest = d.rest[k:]
	return int(n)
}

func (d *decoder) time(what string) time.Time {
	return time.Unix(0, d.varint(what)).UTC()
}

func (d *decoder) header(what string) http.Header {
	n := d.count(what)
	if n == 0 {
		return nil
	}
	h := make(http.Header, n)
	for range n {
		k := d.string(what + " name")
		vs := make([]string, d.count(what+" values"))
		for i := range vs {
			vs[i] = d.string(what + " value")
		}
		if d.err != nil {
			return nil
		}
		h[k] = vs
	}
	return h
}

// UnmarshalBinary decodes what MarshalBinary produced, in either version.
// The bodies do not alias data.
func (j *Job) UnmarshalBinary(data []byte) error {
	if len(data) == 0 {
		return fmt.Errorf("%w: empty", errCorrupt)
	}
	var out Job
	d := decoder{rest: data[1:]}
	var res []byte
	switch data[0] {
	case codecV1:
		meta := d.bytes("fields")
		if d.err == nil {
			if err := json.Unmarshal(meta, &out); err != nil {
				return fmt.Errorf("%w: %v", errCorrupt, err)
			}
		}
	case codecVersion:
		if len(d.rest) == 0 || d.rest[0]&^knownBits != 0 {
			return fmt.Errorf("%w: bad flags", errCorrupt)
		}
		flags := d.rest[0]
		d.rest = d.rest[1:]
		out.ID = d.string("id")
		out.Tenant = d.string("tenant")
		out.Pool = d.string("pool")
		out.Priority = Priority(d.string("priority"))
		out.Status = Status(d.string("status"))
		out.Error = d.string("error")
		out.CallbackURL = d.string("callback URL")
		out.IdempotencyKey = d.string("idempotency key")
		out.TraceParent = d.string("traceparent")
		out.RunID = d.string("run ID")
		out.Request.Method = d.string("method")
		out.Request.Path = d.string("path")
		out.Request.Host = d.string("host")
		out.Attempts = int(d.varint("attempts"))
		out.CallbackAttempts = int(d.varint("callback attempts"))
		if flags&hasCreatedAt != 0 {
			out.CreatedAt = d.time("created_at")
		}
		if flags&hasStartedAt != 0 {
			out.StartedAt = d.time("started_at")
		}
		if flags&hasFinishedAt != 0 {
			out.FinishedAt = d.time("finished_at")
		}
		out.Request.Header = d.header("request header")
		if flags&hasResult != 0 {
			out.Result = &Result{StatusCode: int(d.varint("status code"))}
			out.Result.Header = d.header("result header")
		}
		out.CancelRequested = flags&hasCancelRequested != 0
	default:
		return fmt.Errorf("%w: unknown version", errCorrupt)
	}
	req := d.bytes("request body")
	res = d.bytes("result body")
	if d.err != nil {
		return d.err
	}
	if len(d.rest) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(d.rest))
	}
	out.Request.Body = cloneBytes(req)
	if out.Result != nil {
		out.Result.Body = cloneBytes(res)
	} else if len(res) != 0 {
		return fmt.Errorf("%w: result body without result", errCorrupt)
	}
	out.Revision = j.Revision
	*j = out
	return nil
}

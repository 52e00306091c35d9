package jobs

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
)

// codecVersion is the first byte of an encoded job.
const codecVersion = 1

// maxEncodedBody bounds a body length read back from an encoding, so a
// corrupt length cannot make UnmarshalBinary allocate without limit.
const maxEncodedBody = 1 << 30

// MarshalBinary encodes j for a store: a version byte, the job's fields as
// JSON, then the request body and the result body as raw bytes, each
// preceded by its length as a uvarint. Bodies are kept out of the JSON so
// that they are neither base64-inflated nor re-escaped. Revision is not
// encoded.
func (j *Job) MarshalBinary() ([]byte, error) {
	meta, err := json.Marshal(j)
	if err != nil {
		return nil, fmt.Errorf("encode job %s: %w", j.ID, err)
	}
	var res []byte
	if j.Result != nil {
		res = j.Result.Body
	}
	b := make([]byte, 0, 1+3*binary.MaxVarintLen64+len(meta)+len(j.Request.Body)+len(res))
	b = append(b, codecVersion)
	b = binary.AppendUvarint(b, uint64(len(meta)))
	b = append(b, meta...)
	b = binary.AppendUvarint(b, uint64(len(j.Request.Body)))
	b = append(b, j.Request.Body...)
	b = binary.AppendUvarint(b, uint64(len(res)))
	b = append(b, res...)
	return b, nil
}

// errCorrupt is wrapped by every decoding error.
var errCorrupt = errors.New("corrupt job encoding")

// UnmarshalBinary decodes what MarshalBinary produced. The bodies do not
// alias data.
func (j *Job) UnmarshalBinary(data []byte) error {
	if len(data) == 0 || data[0] != codecVersion {
		return fmt.Errorf("%w: unknown version", errCorrupt)
	}
	rest := data[1:]
	next := func(what string) ([]byte, error) {
		n, k := binary.Uvarint(rest)
		if k <= 0 || n > maxEncodedBody || n > uint64(len(rest)-k) {
			return nil, fmt.Errorf("%w: bad %s length", errCorrupt, what)
		}
		part := rest[k : k+int(n)]
		rest = rest[k+int(n):]
		return part, nil
	}
	meta, err := next("fields")
	if err != nil {
		return err
	}
	req, err := next("request body")
	if err != nil {
		return err
	}
	res, err := next("result body")
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(rest))
	}
	var d Job
	if err := json.Unmarshal(meta, &d); err != nil {
		return fmt.Errorf("%w: %v", errCorrupt, err)
	}
	d.Request.Body = cloneBytes(req)
	if d.Result != nil {
		d.Result.Body = cloneBytes(res)
	} else if len(res) != 0 {
		return fmt.Errorf("%w: result body without result", errCorrupt)
	}
	d.Revision = j.Revision
	*j = d
	return nil
}

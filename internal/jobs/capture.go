package jobs

import (
	"bytes"
	"errors"
	"net/http"

	"github.com/sluice-ai/sluice/internal/hopheader"
)

// errResponseTooLarge is returned by capture.Write once the body passed the
// limit; a handler that checks write errors stops there.
var errResponseTooLarge = errors.New("job response body exceeds the limit")

// capture is the http.ResponseWriter a job's attempt writes to: it keeps
// the status, the headers as of WriteHeader and up to limit bytes of body.
// A streamed (SSE) response is kept whole; Flush does nothing.
type capture struct {
	header   http.Header
	final    http.Header
	status   int
	body     bytes.Buffer
	limit    int
	tooLarge bool
}

var (
	_ http.ResponseWriter = (*capture)(nil)
	_ http.Flusher        = (*capture)(nil)
)

func newCapture(limit int) *capture {
	return &capture{header: make(http.Header), limit: limit}
}

func (c *capture) Header() http.Header { return c.header }

func (c *capture) WriteHeader(code int) {
	if c.status != 0 || code < 200 {
		// Like net/http: a second call is ignored, and 1xx responses are
		// informational (the final one follows).
		return
	}
	c.status = code
	c.final = c.header.Clone()
}

func (c *capture) Write(p []byte) (int, error) {
	if c.status == 0 {
		c.WriteHeader(http.StatusOK)
	}
	if c.tooLarge {
		return 0, errResponseTooLarge
	}
	if c.body.Len()+len(p) > c.limit {
		c.tooLarge = true
		return 0, errResponseTooLarge
	}
	return c.body.Write(p)
}

func (c *capture) Flush() {}

// result returns what was captured. A handler that wrote nothing answered
// 200 with no body, as net/http would have sent.
func (c *capture) result() *Result {
	if c.status == 0 {
		c.WriteHeader(http.StatusOK)
	}
	h := c.final
	hopheader.Remove(h)
	delete(h, "Content-Length") // the body is stored whole; its length is its own
	var body []byte
	if c.body.Len() > 0 {
		body = c.body.Bytes()
	}
	return &Result{StatusCode: c.status, Header: h, Body: body}
}

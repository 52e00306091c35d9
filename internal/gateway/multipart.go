package gateway

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-ai/sluice/internal/openai"
)

// Multipart requests (/v1/audio/transcriptions, /v1/audio/translations,
// /v1/images/edits) carry a file the gateway has no reason to hold: it
// reads the form's parts only until the "model" field, routes by it, and
// streams what it read followed by the rest of the body to the backend.
// Such a request is not retried and has no fallback: once its body started
// flowing to one backend it cannot be sent again.

// maxMultipartPeek is how far into a multipart body the "model" field must
// begin; the parts before it are held until the request is forwarded. The
// OpenAI SDKs send model before the file.
const maxMultipartPeek = 64 << 10

// maxModelField bounds the model field's value.
const maxModelField = 512

var (
	errPeekTooLong  = errors.New("the multipart form has no \"model\" field within its first " + strconv.Itoa(maxMultipartPeek>>10) + " KiB; send model before the file")
	errNoModelField = errors.New("the multipart form has no \"model\" field")
)

// multipartBoundary returns the boundary of a multipart/form-data request,
// or "" for any other.
func multipartBoundary(contentType string) string {
	if !strings.HasPrefix(strings.ToLower(strings.TrimSpace(contentType)), "multipart/") {
		return ""
	}
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "multipart/form-data" {
		return ""
	}
	return params["boundary"]
}

// peekMultipartModel reads the parts of a multipart/form-data body from r
// until its "model" field and returns that field's value and every byte it
// read from r (the prefix to send on before the rest of r). It reads at
// most maxMultipartPeek bytes plus one read (the multipart reader reads
// 4 KiB at a time).
func peekMultipartModel(r io.Reader, boundary string) (model string, prefix []byte, err error) {
	rec := &recorder{r: r, limit: maxMultipartPeek}
	mr := multipart.NewReader(rec, boundary)
	for {
		part, err := mr.NextRawPart()
		if err != nil {
			if errors.Is(err, errPeekTooLong) {
				return "", rec.buf, errPeekTooLong
			}
			if errors.Is(err, io.EOF) {
				return "", rec.buf, errNoModelField
			}
			return "", rec.buf, err
		}
		if part.FormName() == "model" && part.FileName() == "" {
			v, err := io.ReadAll(io.LimitReader(part, maxModelField+1))
			if err != nil {
				return "", rec.buf, err
			}
			if len(v) > maxModelField {
				return "", rec.buf, errors.New("the multipart \"model\" field is longer than " + strconv.Itoa(maxModelField) + " bytes")
			}
			return string(v), rec.buf, nil
		}
		if _, err := io.Copy(io.Discard, part); err != nil {
			return "", rec.buf, err
		}
	}
}

// recorder keeps every byte read through it, failing with errPeekTooLong
// past limit.
type recorder struct {
	r     io.Reader
	buf   []byte
	limit int
}

func (rc *recorder) Read(p []byte) (int, error) {
	if len(rc.buf) >= rc.limit {
		return 0, errPeekTooLong
	}
	n, err := rc.r.Read(p)
	rc.buf = append(rc.buf, p[:n]...)
	return n, err
}

// routeMultipart routes a multipart request by its "model" field, reading
// the body only that far (under limits.body_read_timeout, counted against
// limits.max_buffered_body), and leaves r.Body streaming what was read and
// then the rest, bounded by limits.max_request_body.
func (s *Server) routeMultipart(w http.ResponseWriter, r *http.Request, t *table, x *exchange, boundary string) *openai.Error {
	cfg := t.cfg
	limit := int64(cfg.Limits.MaxRequestBody)
	if r.ContentLength > limit {
		return tooLarge(limit)
	}
	if r.Body == nil || r.Body == http.NoBody {
		return openai.BadRequest(errNoModelField.Error())
	}
	rc := http.NewResponseController(w)
	deadline := rc.SetReadDeadline(s.opts.Clock.Now().Add(cfg.Limits.BodyReadTimeout.D())) == nil
	model, prefix, err := peekMultipartModel(r.Body, boundary)
	if deadline {
		// The rest streams to the backend at the pace the two ends set.
		_ = rc.SetReadDeadline(time.Time{})
	}
	if n := int64(len(prefix)); n > 0 {
		if !s.bodies.take(n, int64(cfg.Limits.MaxBufferedBody)) {
			return openai.Unavailable("gateway_busy", "the gateway holds limits.max_buffered_body of request bodies already; retry later", time.Second)
		}
		x.buffered += n
	}
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return &openai.Error{Status: http.StatusRequestTimeout, Message: "the multipart form's model field did not arrive within limits.body_read_timeout (" + cfg.Limits.BodyReadTimeout.D().String() + ")", Type: "invalid_request_error", Code: "body_timeout"}
	case errors.Is(err, errPeekTooLong), errors.Is(err, errNoModelField):
		return openai.BadRequest(err.Error())
	case err != nil:
		return openai.BadRequest("reading the multipart form: " + err.Error())
	case int64(len(prefix)) > limit:
		return tooLarge(limit)
	case model == "":
		return openai.BadRequest("the multipart \"model\" field is empty")
	}
	p := t.poolForModel(model)
	if p == nil {
		return openai.NotFound("model_not_found", "model \""+model+"\" is not served here; GET /v1/models lists the models")
	}
	x.info, x.model, x.pool = openai.RequestInfo{Model: model, N: 1}, model, p
	if e := mayUse(x.tenant, p, model); e != nil {
		return e
	}
	r.Body = &cappedBody{r: io.MultiReader(bytes.NewReader(prefix), r.Body), c: r.Body, left: limit}
	return nil
}

// errBodyTooLarge ends a streamed body that passes limits.max_request_body.
var errBodyTooLarge = errors.New("request body is larger than limits.max_request_body")

// cappedBody is a streamed request body that fails past left bytes.
type cappedBody struct {
	r    io.Reader
	c    io.Closer
	left int64
}

func (b *cappedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One byte more tells a body of exactly the limit from a longer one.
		var one [1]byte
		if n, _ := b.r.Read(one[:]); n > 0 {
			return 0, errBodyTooLarge
		}
		return b.r.Read(p)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *cappedBody) Close() error { return b.c.Close() }

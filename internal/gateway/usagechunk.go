package gateway

import (
	"bytes"
	"net/http"
	"strings"
)

// hiddenUsage passes a streamed response through, except the final chunk
// that carries only usage (empty choices): the gateway asked for it on the
// client's behalf (stream_options.include_usage, for token accounting),
// and the client, which did not, gets the stream it asked for. The usage is
// read before this writer sees the bytes. Incomplete events wait here until
// their end arrives; a client can do nothing with half an event anyway.
type hiddenUsage struct {
	http.ResponseWriter
	pending []byte
	checked bool
	sse     bool
}

func (h *hiddenUsage) Write(p []byte) (int, error) {
	if !h.checked {
		h.checked = true
		h.sse = strings.HasPrefix(h.Header().Get("Content-Type"), "text/event-stream")
	}
	if !h.sse {
		return h.ResponseWriter.Write(p)
	}
	h.pending = append(h.pending, p...)
	for {
		i := bytes.Index(h.pending, eventEnd)
		if i < 0 {
			break
		}
		ev := h.pending[:i+len(eventEnd)]
		if !usageOnly(ev) {
			if _, err := h.ResponseWriter.Write(ev); err != nil {
				return 0, err
			}
		}
		h.pending = h.pending[i+len(eventEnd):]
	}
	if len(h.pending) == 0 {
		h.pending = h.pending[:0:0]
	}
	return len(p), nil
}

var eventEnd = []byte("\n\n")

// finish writes what is left of an event that never ended.
func (h *hiddenUsage) finish() {
	if len(h.pending) > 0 {
		_, _ = h.ResponseWriter.Write(h.pending)
		h.pending = nil
	}
}

func (h *hiddenUsage) Flush() { _ = http.NewResponseController(h.ResponseWriter).Flush() }

func (h *hiddenUsage) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// usageOnly reports whether an SSE event is an OpenAI usage chunk: a data
// event whose choices are empty and that carries usage.
func usageOnly(ev []byte) bool {
	return bytes.HasPrefix(ev, []byte("data: {")) && bytes.Contains(ev, []byte(`"choices":[]`)) && bytes.Contains(ev, []byte(`"usage":{`))
}

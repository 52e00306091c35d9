package main

import (
	"bytes"
	"flag"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// backendCommand is the first argument that makes this executable run the
// overhead scenario's backend instead of the suite.
const backendCommand = "backend"

// backendResponse is the backend's answer to every inference request: a
// small, well-formed chat completion with usage, as a model server would
// send for a short reply.
var backendResponse = []byte(`{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"sim-llm",` +
	`"choices":[{"index":0,"message":{"role":"assistant","content":"a short reply from the fast backend"},"finish_reason":"stop"}],` +
	`"usage":{"prompt_tokens":16,"completion_tokens":7,"total_tokens":23}}`)

// backendEvent is one event of a streamed answer: a chunk with one token.
var backendEvent = []byte(`data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"sim-llm",` +
	`"choices":[{"index":0,"delta":{"content":"tick "},"finish_reason":null}]}` + "\n\n")

// streamRequested is how the backend tells a streamed request: the suite's
// clients all write the field this way.
var streamRequested = []byte(`"stream":true`)

// backendStreamEvents bounds a streamed answer, so that a stream nobody
// reads any more ends by itself.
const backendStreamEvents = 600

// bodyBuffers hold request bodies while the backend looks into them, so
// that the direct baseline allocates no more per request than it must.
var bodyBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// backendHandler answers /health with 200 and anything else with
// backendResponse after reading the request body, so that what the overhead
// scenario measures is the proxy in front and not the backend. A request
// whose body asks for a stream gets one event every streamEvery instead,
// the first at once, until the client leaves or backendStreamEvents were
// sent: a model that streams slowly, which keeps streams open for the
// memory scenario.
func backendHandler(streamEvery time.Duration) http.Handler {
	length := strconv.Itoa(len(backendResponse))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			w.WriteHeader(http.StatusOK)
			return
		}
		buf := bodyBuffers.Get().(*bytes.Buffer)
		buf.Reset()
		_, _ = buf.ReadFrom(r.Body)
		stream := bytes.Contains(buf.Bytes(), streamRequested)
		bodyBuffers.Put(buf)
		h := w.Header()
		if stream {
			h["Content-Type"] = []string{"text/event-stream"}
			h["Cache-Control"] = []string{"no-cache"}
			streamEvents(w, r, streamEvery)
			return
		}
		h["Content-Type"] = []string{"application/json"}
		h["Content-Length"] = []string{length}
		_, _ = w.Write(backendResponse)
	})
}

// streamEvents writes backendEvent every interval until the request ends.
func streamEvents(w http.ResponseWriter, r *http.Request, every time.Duration) {
	flush := http.NewResponseController(w).Flush
	t := time.NewTicker(every)
	defer t.Stop()
	for range backendStreamEvents {
		if _, err := w.Write(backendEvent); err != nil {
			return
		}
		if err := flush(); err != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-t.C:
		}
	}
	_, _ = io.WriteString(w, "data: [DONE]\n\n")
}

// runBackend serves backendHandler on -addr until SIGTERM or SIGINT.
func runBackend(args []string) error {
	fs := flag.NewFlagSet(backendCommand, flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "address to listen on")
	every := fs.Duration("stream-every", time.Second, "time between the events of a streamed answer")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return serveUntilSignal(*addr, backendHandler(*every))
}

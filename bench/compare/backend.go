package main

import (
	"flag"
	"io"
	"net/http"
	"strconv"
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

// backendHandler answers /health with 200 and anything else with
// backendResponse after reading the request body, so that what the overhead
// scenario measures is the proxy in front and not the backend.
func backendHandler() http.Handler {
	length := strconv.Itoa(len(backendResponse))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			w.WriteHeader(http.StatusOK)
			return
		}
		_, _ = io.Copy(io.Discard, r.Body)
		h := w.Header()
		h["Content-Type"] = []string{"application/json"}
		h["Content-Length"] = []string{length}
		_, _ = w.Write(backendResponse)
	})
}

// runBackend serves backendHandler on -addr until SIGTERM or SIGINT.
func runBackend(args []string) error {
	fs := flag.NewFlagSet(backendCommand, flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "address to listen on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return serveUntilSignal(*addr, backendHandler())
}

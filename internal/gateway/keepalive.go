package gateway

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
)

// waitKeepAlive is how often a streamed request that waits for a replica
// gets an SSE comment: shorter than the idle timeouts clients, load
// balancers and proxies commonly use (5 s and up).
const waitKeepAlive = 2 * time.Second

// waitComment is the SSE comment sent while a stream waits; clients ignore
// comments, and it tells a person reading the stream what happens.
var waitComment = []byte(": waiting for a replica\n\n")

// waitingStream is the response of a streamed request that arrived while
// its pool had no replica free (scaling from zero, or a burst queued). If no
// answer has begun after waitKeepAlive, it sends 200 with SSE headers and
// then a comment every waitKeepAlive, so the client and the proxies between
// do not time the request out while a replica starts. Once the stream is
// open like this, the status can no longer change: an answer that fails
// (a 503 after queue.timeout, a replica's 500) reaches the client as an SSE
// "error" event carrying the error object.
type waitingStream struct {
	http.ResponseWriter

	header http.Header // the answer's headers, copied to the client's at WriteHeader

	mu      sync.Mutex
	opened  bool         // the keep-alive sent the 200 and its headers
	began   bool         // the answer began (WriteHeader or Write)
	failed  int          // the answer's status when it failed after opened
	errBody bytes.Buffer // the failed answer's body, sent as an error event
	stop    chan struct{}
	done    chan struct{}
}

// keepWaiting wraps w and starts its keep-alive; finish stops it.
func keepWaiting(w http.ResponseWriter, clock clockwork.Clock) *waitingStream {
	ws := &waitingStream{ResponseWriter: w, header: w.Header().Clone(), stop: make(chan struct{}), done: make(chan struct{})}
	go ws.run(clock)
	return ws
}

func (ws *waitingStream) run(clock clockwork.Clock) {
	defer close(ws.done)
	t := clock.NewTicker(waitKeepAlive)
	defer t.Stop()
	for {
		select {
		case <-ws.stop:
			return
		case <-t.Chan():
		}
		ws.mu.Lock()
		if ws.began {
			ws.mu.Unlock()
			return
		}
		if !ws.opened {
			h := ws.ResponseWriter.Header()
			h.Set("Content-Type", "text/event-stream")
			h.Set("Cache-Control", "no-cache")
			h.Set("X-Accel-Buffering", "no")
			h.Del("Content-Length")
			ws.ResponseWriter.WriteHeader(http.StatusOK)
			ws.opened = true
		}
		_, err := ws.ResponseWriter.Write(waitComment)
		if err == nil {
			err = http.NewResponseController(ws.ResponseWriter).Flush()
		}
		ws.mu.Unlock()
		if err != nil {
			return // the client left; the request's context ends the wait
		}
	}
}

// Header is the answer's header map: the keep-alive writes the client's
// own, so the two never race.
func (ws *waitingStream) Header() http.Header { return ws.header }

func (ws *waitingStream) WriteHeader(code int) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	ws.beginLocked(code)
}

// beginLocked starts the answer with code: sent as is if the stream is not
// open yet, else remembered if it is a failure.
func (ws *waitingStream) beginLocked(code int) {
	if ws.began {
		return
	}
	ws.began = true
	switch {
	case !ws.opened:
		h := ws.ResponseWriter.Header()
		clear(h)
		for k, v := range ws.header {
			h[k] = v
		}
		ws.ResponseWriter.WriteHeader(code)
	case code >= http.StatusBadRequest:
		ws.failed = code
	}
}

func (ws *waitingStream) Write(p []byte) (int, error) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	ws.beginLocked(http.StatusOK)
	if ws.failed != 0 {
		if ws.errBody.Len() < 64<<10 {
			ws.errBody.Write(p)
		}
		return len(p), nil
	}
	return ws.ResponseWriter.Write(p)
}

func (ws *waitingStream) Flush() {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.failed == 0 {
		_ = http.NewResponseController(ws.ResponseWriter).Flush()
	}
}

func (ws *waitingStream) Unwrap() http.ResponseWriter { return ws.ResponseWriter }

// finish stops the keep-alive and, if the answer failed after the stream
// was opened, sends the failure as an SSE error event.
func (ws *waitingStream) finish() {
	close(ws.stop)
	<-ws.done
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.failed == 0 {
		return
	}
	ws.ResponseWriter.Write(errorEvent(ws.failed, ws.errBody.Bytes()))
	_ = http.NewResponseController(ws.ResponseWriter).Flush()
}

// errorEvent is an SSE "error" event for a failed answer: its JSON body on
// one line, or an error object naming the status when the body is not JSON.
func errorEvent(status int, body []byte) []byte {
	var compact bytes.Buffer
	if json.Compact(&compact, bytes.TrimSpace(body)) != nil || compact.Len() == 0 {
		compact.Reset()
		msg, _ := json.Marshal("the request failed with status " + strconv.Itoa(status) + " after the stream opened")
		compact.WriteString(`{"error":{"message":` + string(msg) + `,"type":"server_error","code":"` + strconv.Itoa(status) + `"}}`)
	}
	out := append([]byte("event: error\ndata: "), compact.Bytes()...)
	return append(out, "\n\n"...)
}

package gateway

import (
	"net/http"
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine a gateway starts — listeners, pools' health checks and
// timers, replica supervisors, the job system and embedded NATS, the
// limiter, the cache — is owned and stopped when Run returns.
func TestRunLeavesNoGoroutines(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	be := newCapturing(t)
	g := startGateway(t, "listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\nlog: {level: error}\n"+
		"pools:\n  - {name: chat, models: [m], cache: {ttl: 1m}, health_check: {path: /health, interval: 50ms, timeout: 40ms}, backends: [{url: "+be.URL+"}]}\n")
	resp := g.post("/v1/chat/completions", `{"model":"m"}`)
	readAll(t, resp)
	resp = g.post("/v1/chat/completions", `{"model":"m"}`, "Prefer", "respond-async")
	readAll(t, resp)
	if err := g.stop(); err != nil {
		t.Fatal(err)
	}
	http.DefaultClient.CloseIdleConnections()
	be.Close()
	goleak.VerifyNone(t, ignore)
}

package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"
)

// slowUpload opens a connection, sends the headers of a POST declaring a
// body of declared bytes and then the first sent bytes of it, and leaves
// the rest pending.
func slowUpload(t *testing.T, addr, key string, declared, sent int) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", key, declared)
	_, _ = c.Write([]byte(`{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("a", sent-52) + `"`))
	return c
}

// Forty slow uploads declaring 32 MiB from one tenant with concurrency 3
// pushed the heap to 1.3 GB: the gateway allocated each declared length at
// once and checked the tenant's limits only after the body. Now the tenant
// gets 429 before any body is read beyond its concurrency, and buffers grow
// with the bytes that arrive.
func TestSlowUploadsAreBoundedBeforeAdmission(t *testing.T) {
	be := newCapturing(t)
	g := startGateway(t, "listen: 127.0.0.1:0\nadmin: {listen: \"\"}\nlog: {level: error}\nlimits: {max_request_body: 32MiB, body_read_timeout: 1m}\n"+
		"auth:\n  keys:\n    - {name: t, key: k, limits: {concurrency: 3}}\n"+
		"pools:\n  - {name: chat, models: [m], health_check: {path: \"\"}, backends: [{url: "+be.URL+"}]}\n")
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	const uploads, declared, sent = 40, 32 << 20, 64 << 10
	conns := make([]net.Conn, 0, uploads)
	refused := 0
	for range uploads {
		c := slowUpload(t, g.srv.Addr(), "k", declared, sent)
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			continue // still uploading: admitted
		}
		if resp.StatusCode == http.StatusTooManyRequests {
			refused++
		}
		_, _ = io.Copy(io.Discard, resp.Body)
	}
	if refused != uploads-3 {
		t.Errorf("%d of %d uploads refused, want %d (all beyond the tenant's concurrency of 3)", refused, uploads, uploads-3)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 200<<20 {
		t.Errorf("heap grew %d MiB for %d slow uploads, want under 200 MiB", grew>>20, uploads)
	}
	if held := g.srv.bodies.n.Load(); held > 3*sent+3*(32<<10) {
		t.Errorf("%d body bytes held for 3 admitted uploads of %d bytes sent", held, sent)
	}
}

// A body that stops arriving is answered 408 once limits.body_read_timeout
// passes, and its bytes are released.
func TestStalledBodyTimesOut(t *testing.T) {
	be := newCapturing(t)
	g := startGateway(t, "listen: 127.0.0.1:0\nadmin: {listen: \"\"}\nlog: {level: error}\nlimits: {body_read_timeout: 200ms}\n"+
		"pools:\n  - {name: chat, models: [m], health_check: {path: \"\"}, backends: [{url: "+be.URL+"}]}\n")
	c := slowUpload(t, g.srv.Addr(), "none", 1<<20, 1024)
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("stalled body: %d, want 408", resp.StatusCode)
	}
	if held := g.srv.bodies.n.Load(); held != 0 {
		t.Fatalf("%d body bytes still held after the request ended", held)
	}
}

// Too many header fields are refused with 431, as a trusted proxy does.
func TestHeaderLimits(t *testing.T) {
	be := newCapturing(t)
	g := startGateway(t, "listen: 127.0.0.1:0\nadmin: {listen: \"\"}\nlog: {level: error}\n"+
		"pools:\n  - {name: chat, models: [m], health_check: {path: \"\"}, backends: [{url: "+be.URL+"}]}\n")
	hdr := []string{}
	for i := range 150 {
		hdr = append(hdr, fmt.Sprintf("X-H%d", i), "v")
	}
	if resp := g.post("/v1/chat/completions", `{"model":"m"}`, hdr...); resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("150 headers: %d, want 431", resp.StatusCode)
	}
	big := strings.Repeat("a", 100<<10)
	if resp := g.post("/v1/chat/completions", `{"model":"m"}`, "X-Big", big); resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("100 KiB header: %d, want 431", resp.StatusCode)
	}
}

// The same attack over one h2c connection: 40 streams of one tenant, each a
// slow upload declaring 32 MiB. Admission is per request, so the streams
// beyond the tenant's concurrency get 429 before their bodies are read.
func TestSlowUploadsOverOneH2CConnection(t *testing.T) {
	be := newCapturing(t)
	g := startGateway(t, "listen: 127.0.0.1:0\nadmin: {listen: \"\"}\nlog: {level: error}\nlimits: {max_request_body: 32MiB, body_read_timeout: 1m}\n"+
		"auth:\n  keys:\n    - {name: t, key: k, limits: {concurrency: 3}}\n"+
		"pools:\n  - {name: chat, models: [m], health_check: {path: \"\"}, backends: [{url: "+be.URL+"}]}\n")
	tr := &http.Transport{Protocols: new(http.Protocols), MaxConnsPerHost: 1}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	const uploads = 40
	codes := make(chan int, uploads)
	var writers []*io.PipeWriter
	for range uploads {
		pr, pw := io.Pipe()
		writers = append(writers, pw)
		req, _ := http.NewRequest(http.MethodPost, "http://"+g.srv.Addr()+"/v1/chat/completions", pr)
		req.ContentLength = 32 << 20
		req.Header.Set("Authorization", "Bearer k")
		go func() {
			resp, err := client.Do(req)
			if err != nil {
				codes <- 0
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
		go func() {
			_, _ = pw.Write([]byte(`{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("a", 16<<10)))
		}()
	}
	defer func() {
		for _, pw := range writers {
			pw.CloseWithError(io.ErrUnexpectedEOF)
		}
	}()
	refused := 0
	timeout := time.After(20 * time.Second)
	for refused < uploads-3 {
		select {
		case c := <-codes:
			if c != http.StatusTooManyRequests {
				t.Fatalf("an upload ended with %d while the tenant's 3 admitted uploads were still sending", c)
			}
			refused++
		case <-timeout:
			t.Fatalf("%d of %d streams refused, want %d", refused, uploads, uploads-3)
		}
	}
	if held := g.srv.bodies.n.Load(); held > 3*(16<<10+64)+3*(32<<10) {
		t.Errorf("%d body bytes held for 3 admitted streams", held)
	}
}

// A request with both Content-Length and chunked Transfer-Encoding (a
// smuggling attempt) is answered and its connection closed, so nothing
// after it on that connection is read as a request.
func TestChunkedRequestClosesTheConnection(t *testing.T) {
	be := newCapturing(t)
	g := startGateway(t, "listen: 127.0.0.1:0\nadmin: {listen: \"\"}\nlog: {level: error}\n"+
		"pools:\n  - {name: chat, models: [m], health_check: {path: \"\"}, backends: [{url: "+be.URL+"}]}\n")
	c, err := net.Dial("tcp", g.srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	body := `{"model":"m"}`
	smuggled := "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
	fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n%s", len(body), body, smuggled)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	if !resp.Close {
		t.Fatal("the response to a chunked request did not close the connection")
	}
	if _, err := http.ReadResponse(br, nil); err == nil {
		t.Fatal("a second request on the connection was answered")
	}
}

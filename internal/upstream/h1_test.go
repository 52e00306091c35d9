package upstream

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingServer is an httptest server that counts the connections it
// accepted.
func countingServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

func testH1(fallback http.RoundTripper) *h1Transport {
	if fallback == nil {
		fallback = http.DefaultTransport
	}
	return newH1Transport(fallback, &net.Dialer{Timeout: time.Second}, 0, time.Minute, 4)
}

// seekBody is a buffered request body as the proxy sends it.
type seekBody struct{ bytes.Reader }

func (*seekBody) Close() error { return nil }

func newSeekBody(s string) *seekBody {
	b := &seekBody{}
	b.Reset([]byte(s))
	return b
}

func post(t *testing.T, tr http.RoundTripper, url, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Body, req.ContentLength = newSeekBody(body), int64(len(body))
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	resp.Body.Close()
	return resp, string(b)
}

func TestH1ReusesConnections(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Got", r.Method+" "+r.URL.RequestURI()+" "+r.Header.Get("X-Test")+" "+r.Host)
		w.Write(bytes.ToUpper(b))
	})
	tr := testH1(nil)
	defer tr.CloseIdleConnections()
	for i := range 10 {
		resp, body := post(t, tr, srv.URL+"/v1/x?a=b", "hello")
		if resp.StatusCode != 200 || body != "HELLO" || resp.Header.Get("X-Got") != "POST /v1/x?a=b  "+srv.Listener.Addr().String() {
			t.Fatalf("request %d: %d %q %q", i, resp.StatusCode, body, resp.Header.Get("X-Got"))
		}
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/", nil)
	req.Header.Set("X-Test", "a\r\nX-Injected: b")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if got := resp.Header.Get("X-Got"); got != "GET / a  X-Injected: b "+srv.Listener.Addr().String() {
		t.Errorf("a header value with a line break arrived as %q", got)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("11 sequential requests used %d connections, want 1", n)
	}
}

func TestH1ConcurrentRequests(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	})
	tr := testH1(nil)
	defer tr.CloseIdleConnections()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				want := strings.Repeat(string(rune('a'+g)), 10+i)
				if _, got := post(t, tr, srv.URL, want); got != want {
					t.Errorf("answer %q, want %q", got, want)
				}
			}
		}()
	}
	wg.Wait()
	if n := conns.Load(); n > 8+4 {
		t.Errorf("200 requests, 8 at a time, used %d connections", n)
	}
}

// TestH1BackendClosedIdleConnection: a backend that closes an idle
// connection (its keep-alive timeout) costs no request.
func TestH1BackendClosedIdleConnection(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	tr := testH1(nil)
	defer tr.CloseIdleConnections()
	post(t, tr, srv.URL, "x")
	srv.CloseClientConnections() // as an idle timeout would
	// Wait until the FIN has reached the idle connection, as it has when a
	// backend's idle timeout closed it a while ago.
	host := srv.Listener.Addr().String()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		tr.mu.Lock()
		idle := tr.idle[host]
		tr.mu.Unlock()
		if len(idle) != 1 {
			t.Fatalf("%d idle connections, want 1", len(idle))
		}
		if !idle[0].probe.open() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the closed connection still looks open after 5s")
		}
	}
	if _, body := post(t, tr, srv.URL, "y"); body != "ok" {
		t.Fatalf("answer %q", body)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (the closed one replaced)", n)
	}
}

// rawBackend answers each connection with the function's bytes after
// reading one request.
func rawBackend(t *testing.T, answer func(req *http.Request, w *bufio.Writer)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br, bw := bufio.NewReader(c), bufio.NewWriter(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					answer(req, bw)
					if bw.Flush() != nil {
						return
					}
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

func TestH1Framing(t *testing.T) {
	url := rawBackend(t, func(req *http.Request, w *bufio.Writer) {
		switch req.URL.Path {
		case "/continue":
			w.WriteString("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		case "/chunked":
			w.WriteString("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nX-T: done\r\n\r\n")
		case "/nocontent":
			w.WriteString("HTTP/1.1 204 No Content\r\n\r\n")
		case "/head":
			w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
		}
	})
	tr := testH1(nil)
	defer tr.CloseIdleConnections()
	for _, c := range []struct{ method, path, body, trailer string }{
		{"GET", "/continue", "ok", ""},
		{"GET", "/chunked", "abcde", "done"},
		{"GET", "/nocontent", "", ""},
		{"HEAD", "/head", "", ""},
		{"GET", "/chunked", "abcde", "done"},
	} {
		req, _ := http.NewRequest(c.method, url+c.path, nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s %s: %v", c.method, c.path, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(b) != c.body || resp.Trailer.Get("X-T") != c.trailer {
			t.Errorf("%s %s: body %q (%v), trailer %q; want %q, %q", c.method, c.path, b, err, resp.Trailer.Get("X-T"), c.body, c.trailer)
		}
	}
}

func TestH1ConnectionCloseIsNotReused(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		w.Write([]byte("bye"))
	})
	tr := testH1(nil)
	defer tr.CloseIdleConnections()
	for range 3 {
		if _, body := post(t, tr, srv.URL, "x"); body != "bye" {
			t.Fatalf("answer %q", body)
		}
	}
	if n := conns.Load(); n != 3 {
		t.Errorf("%d connections for 3 answers with Connection: close, want 3", n)
	}
}

func TestH1BodyClosedEarlyClosesTheConnection(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write(bytes.Repeat([]byte("x"), 1<<20))
	})
	tr := testH1(nil)
	defer tr.CloseIdleConnections()
	for range 2 {
		req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Read(make([]byte, 10))
		resp.Body.Close()
		resp.Body.Close() // twice is harmless
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2: a half-read answer leaves its connection unusable", n)
	}
}

func TestH1CancelAndFirstByteTimeout(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	tr := testH1(nil)
	defer tr.CloseIdleConnections()

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	errc := make(chan error, 1)
	go func() {
		_, err := tr.RoundTrip(req)
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("a canceled request got an answer")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a canceled request kept waiting for its answer")
	}

	tr.firstByte = 100 * time.Millisecond
	req, _ = http.NewRequest(http.MethodGet, srv.URL, nil)
	_, err := tr.RoundTrip(req)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("no answer within timeouts.first_byte: error %v, want a timeout", err)
	}
}

// streamingBody is a request body that cannot be sent twice.
type streamingBody struct{ io.Reader }

func (streamingBody) Close() error { return nil }

type countingRoundTripper struct {
	n  atomic.Int64
	rt http.RoundTripper
}

func (c *countingRoundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.rt.RoundTrip(r)
}

func TestH1FallsBackForWhatItDoesNotTake(t *testing.T) {
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	})
	fb := &countingRoundTripper{rt: &http.Transport{}}
	tr := testH1(fb)
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, srv.URL, nil)
	req.Body, req.ContentLength = streamingBody{strings.NewReader("streamed")}, -1
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "streamed" || fb.n.Load() != 1 {
		t.Errorf("a streamed body: answer %q, %d requests through net/http's transport; want it there", b, fb.n.Load())
	}
	post(t, tr, srv.URL, "buffered")
	if fb.n.Load() != 1 {
		t.Error("a buffered body went through net/http's transport")
	}
}

// TestH1ClosesIdleConnections: connections idle past the idle timeout are
// closed even when their backend gets no more requests.
func TestH1ClosesIdleConnections(t *testing.T) {
	closed := make(chan struct{}, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed <- struct{}{}
		}
	}
	srv.Start()
	defer srv.Close()
	tr := newH1Transport(http.DefaultTransport, &net.Dialer{}, 0, 50*time.Millisecond, 4)
	defer tr.CloseIdleConnections()
	post(t, tr, srv.URL, "x")
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("an idle connection is still open 10s after its 50ms idle timeout")
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.idle) != 0 {
		t.Errorf("%d backends still listed with idle connections", len(tr.idle))
	}
}

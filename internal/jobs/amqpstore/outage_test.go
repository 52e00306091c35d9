package amqpstore_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/jobs"
	"github.com/sluice-ai/sluice/internal/jobs/amqpstore/amqptest"
	"github.com/sluice-ai/sluice/internal/jobs/jobstest"
	"github.com/sluice-ai/sluice/internal/redistest"
)

// proxy forwards TCP connections to a backend until it is taken down,
// which closes every connection and refuses new ones: a broker outage.
type proxy struct {
	ln      net.Listener
	backend string
	mu      sync.Mutex
	down    bool
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
}

func newProxy(t *testing.T, backend string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, backend: backend, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.setDown(true)
		p.wg.Wait()
	})
	return p
}

func (p *proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			c.Close()
			continue
		}
		b, err := net.Dial("tcp", p.backend)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c], p.conns[b] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { defer p.wg.Done(); io.Copy(b, c); b.Close() }()
		go func() { defer p.wg.Done(); io.Copy(c, b); c.Close() }()
	}
}

func (p *proxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}

// TestBrokerOutage cuts the store's connection to RabbitMQ: submissions
// fail while it is down, the store reconnects when it is back, and every
// job — those accepted before and after, and the one whose submission
// failed (its record was written; the sweep publishes it) — succeeds.
func TestBrokerOutage(t *testing.T) {
	u, err := url.Parse(amqptest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	px := newProxy(t, u.Host)
	u.Host = px.ln.Addr().String()
	store := newNamespace(u.String(), redistest.Start(t).URL())(t)(t, 10*time.Second)
	exec := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"ok":true}`))
	})
	svc, err := jobs.New(context.Background(), jobs.Options{Store: store, Exec: exec, Concurrency: 4, Logger: jobstest.TestLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		svc.Close(ctx)
	}()
	submit := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := svc.Submit(ctx, jobs.SubmitRequest{Tenant: "t", Pool: "chat", Method: http.MethodPost, Path: "/v1/embeddings", Body: []byte(`{}`)})
		return err
	}
	for range 10 {
		if err := submit(); err != nil {
			t.Fatal(err)
		}
	}
	px.setDown(true)
	deadline := time.Now().Add(30 * time.Second)
	for submit() == nil {
		if time.Now().After(deadline) {
			t.Fatal("submissions still succeed with the broker down")
		}
		time.Sleep(20 * time.Millisecond)
	}
	px.setDown(false)
	deadline = time.Now().Add(60 * time.Second)
	for submit() != nil {
		if time.Now().After(deadline) {
			t.Fatal("the store did not reconnect")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for range 10 {
		if err := submit(); err != nil {
			t.Fatal(err)
		}
	}
	// Every recorded job succeeds, the failed submission's too.
	deadline = time.Now().Add(60 * time.Second)
	for {
		list, _, err := store.List(context.Background(), jobs.ListQuery{Tenant: "t", Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		done := 0
		for _, j := range list {
			if j.Status == jobs.StatusSucceeded {
				done++
			}
		}
		if done == len(list) && len(list) >= 22 {
			t.Logf("%d jobs, all succeeded", len(list))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d jobs succeeded", done, len(list))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

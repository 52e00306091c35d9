package bridge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sluice-ai/sluice/internal/bridge"
	"github.com/sluice-ai/sluice/internal/jobs/amqpstore/amqptest"
)

// rpcClient is a producer using the RPC pattern: an exclusive reply queue
// and a correlation_id per request.
type rpcClient struct {
	t       *testing.T
	ch      *amqp.Channel
	replyTo string
	replies <-chan amqp.Delivery
}

func newRPCClient(t *testing.T, url string) *rpcClient {
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	replies, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &rpcClient{t: t, ch: ch, replyTo: q.Name, replies: replies}
}

func (c *rpcClient) send(queue, corr string, body []byte, replyTo bool) {
	c.t.Helper()
	p := amqp.Publishing{ContentType: "application/json", CorrelationId: corr, Body: body, DeliveryMode: amqp.Persistent}
	if replyTo {
		p.ReplyTo = c.replyTo
	}
	if err := c.ch.PublishWithContext(context.Background(), "", queue, false, false, p); err != nil {
		c.t.Fatal(err)
	}
}

// collect reads replies until every correlation id in want was answered
// at least once; it returns the first answer of each.
func (c *rpcClient) collect(want map[string]bool) map[string]amqp.Delivery {
	c.t.Helper()
	got := make(map[string]amqp.Delivery)
	timeout := time.After(60 * time.Second)
	for len(got) < len(want) {
		select {
		case d := <-c.replies:
			if _, seen := got[d.CorrelationId]; !seen && want[d.CorrelationId] {
				got[d.CorrelationId] = d
			}
		case <-timeout:
			c.t.Fatalf("%d of %d answers after 60s", len(got), len(want))
		}
	}
	return got
}

func startAMQP(t *testing.T, ctx context.Context, cfg bridge.AMQP, o bridge.Options) chan error {
	done := make(chan error, 1)
	go func() { done <- bridge.RunAMQP(ctx, cfg, o) }()
	return done
}

func TestAMQPBridge(t *testing.T) {
	url := amqptest.URL(t)
	m := newModel(t)
	prefix := amqptest.Prefix()
	cfg := bridge.AMQP{URL: url, Queue: prefix + ".requests", DeadLetter: prefix + ".dead"}
	client := newRPCClient(t, url)
	ctx, cancel := context.WithCancel(context.Background())
	done := startAMQP(t, ctx, cfg, options(m))
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	want := map[string]bool{}
	// The bridge declares the queue; publish once it exists.
	waitQueue(t, url, cfg.Queue)
	for i := range 20 {
		id := "r" + strconv.Itoa(i)
		model := "sim"
		if i%5 == 0 {
			model = "flaky"
		}
		client.send(cfg.Queue, id, request(model, id), true)
		want[id] = true
	}
	client.send(cfg.Queue, "bad-json", []byte(`{"model":`), true)
	client.send(cfg.Queue, "bad-model", request("gpt-nope", "bad-model"), true)
	client.send(cfg.Queue, "no-reply", request("sim", "no-reply"), false)
	want["bad-json"], want["bad-model"] = true, true

	got := client.collect(want)
	for id := range want {
		d := got[id]
		var a answer
		if err := json.Unmarshal(d.Body, &a); err != nil {
			t.Fatalf("%s: answer %q: %v", id, d.Body, err)
		}
		status, _ := d.Headers[bridge.HeaderStatus].(int32)
		switch id {
		case "bad-json":
			if status != 400 || a.Error == nil || d.Headers[bridge.HeaderError] == nil {
				t.Errorf("bad JSON answered %d %s", status, d.Body)
			}
		case "bad-model":
			if status != 404 || a.Error == nil {
				t.Errorf("unknown model answered %d %s", status, d.Body)
			}
		default:
			if status != 200 || a.ID != id || a.Tenant != "team-a" {
				t.Errorf("%s answered %d %s", id, status, d.Body)
			}
			if a.Model == "flaky" && a.Attempt != 2 {
				t.Errorf("%s: flaky request answered by attempt %d, want the retry", id, a.Attempt)
			}
		}
	}
	if n := m.callsOf("bad-model"); n != 0 {
		t.Errorf("a request for an unknown model reached the model %d times", n)
	}

	// The poison messages are in the dead-letter queue with their errors.
	dead := drain(t, url, cfg.DeadLetter, 3)
	errs := map[string]string{}
	for _, d := range dead {
		e, _ := d.Headers[bridge.HeaderError].(string)
		errs[d.CorrelationId] = e
	}
	for id, substr := range map[string]string{"bad-json": "not JSON", "bad-model": "404", "no-reply": "reply_to"} {
		if e, ok := errs[id]; !ok || !strings.Contains(e, substr) {
			t.Errorf("dead letter of %s: error %q, want one mentioning %q", id, e, substr)
		}
	}
	// Every request was acknowledged.
	eventuallyEmpty(t, url, cfg.Queue)
}

// TestAMQPBridgeLosesNothing stops a bridge while it is busy (its
// connection closes with requests in flight, as a killed gateway's does)
// and checks that a second bridge answers every request.
func TestAMQPBridgeLosesNothing(t *testing.T) {
	url := amqptest.URL(t)
	m := newModel(t)
	prefix := amqptest.Prefix()
	cfg := bridge.AMQP{URL: url, Queue: prefix + ".requests", DeadLetter: prefix + ".dead"}
	client := newRPCClient(t, url)
	ctx1, kill := context.WithCancel(context.Background())
	done1 := startAMQP(t, ctx1, cfg, options(m))
	waitQueue(t, url, cfg.Queue)
	want := map[string]bool{}
	for i := range 40 {
		id := fmt.Sprintf("s%d", i)
		client.send(cfg.Queue, id, request("slow", id), true)
		want[id] = true
	}
	// Kill the first bridge once it answered some.
	answered := map[string]bool{}
	for len(answered) < 5 {
		select {
		case d := <-client.replies:
			answered[d.CorrelationId] = true
		case <-time.After(60 * time.Second):
			t.Fatal("no answers")
		}
	}
	kill()
	<-done1
	before := len(answered)
	ctx2, cancel := context.WithCancel(context.Background())
	done2 := startAMQP(t, ctx2, cfg, options(m))
	defer func() {
		cancel()
		<-done2
	}()
	// Every request gets an answer (some may get two: at least once).
	deadline := time.After(60 * time.Second)
	for len(answered) < len(want) {
		select {
		case d := <-client.replies:
			answered[d.CorrelationId] = true
		case <-deadline:
			t.Fatalf("%d of %d requests answered (%d before the kill)", len(answered), len(want), before)
		}
	}
	if before == len(want) {
		t.Fatal("the first bridge answered everything before it was killed; the test proved nothing")
	}
	eventuallyEmpty(t, url, cfg.Queue)
}

func waitQueue(t *testing.T, url, queue string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := inspect(url, queue); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue %s never declared", queue)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// inspect returns a queue's ready and unacked message counts.
func inspect(url, queue string) (int, error) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return 0, err
	}
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		return 0, err
	}
	return q.Messages, nil
}

func eventuallyEmpty(t *testing.T, url, queue string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, err := inspect(url, queue)
		if err == nil && n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue %s still holds %d messages (%v)", queue, n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func drain(t *testing.T, url, queue string, n int) []amqp.Delivery {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	var out []amqp.Delivery
	deadline := time.Now().Add(30 * time.Second)
	for len(out) < n {
		d, ok, err := ch.Get(queue, true)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			out = append(out, d)
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d dead letters in %s", len(out), n, queue)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return out
}

package bridge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-ai/sluice/internal/bridge"
	"github.com/sluice-ai/sluice/internal/jobs"
)

func kafkaCluster(t *testing.T, topics ...string) []string {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, topics...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

func kafkaClient(t *testing.T, brokers []string, opts ...kgo.Opt) *kgo.Client {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func produce(t *testing.T, cl *kgo.Client, topic, key string, value []byte) {
	t.Helper()
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Key: []byte(key), Value: value}).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// consumeUntil reads topic from the start until every key in want was
// seen; it returns the first record of each.
func consumeUntil(t *testing.T, brokers []string, topic string, want map[string]bool) map[string]*kgo.Record {
	t.Helper()
	cl := kafkaClient(t, brokers, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	got := make(map[string]*kgo.Record)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for len(got) < len(want) {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%d of %d records in %s", len(got), len(want), topic)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if k := string(r.Key); want[k] && got[k] == nil {
				got[k] = r
			}
		})
	}
	return got
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func TestKafkaBridge(t *testing.T) {
	cfg := bridge.Kafka{Topic: "requests", ResultsTopic: "results", DeadLetterTopic: "dead", Group: "sluice-chat"}
	cfg.Brokers = kafkaCluster(t, cfg.Topic, cfg.ResultsTopic, cfg.DeadLetterTopic)
	m := newModel(t)
	prod := kafkaClient(t, cfg.Brokers)
	want := map[string]bool{}
	for i := range 20 {
		id := "k" + strconv.Itoa(i)
		model := "sim"
		if i%5 == 0 {
			model = "flaky"
		}
		produce(t, prod, cfg.Topic, id, request(model, id))
		want[id] = true
	}
	produce(t, prod, cfg.Topic, "bad-json", []byte("not json"))
	produce(t, prod, cfg.Topic, "bad-model", request("gpt-nope", "bad-model"))
	want["bad-json"], want["bad-model"] = true, true

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- bridge.RunKafka(ctx, cfg, options(m)) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	results := consumeUntil(t, cfg.Brokers, cfg.ResultsTopic, want)
	for id, r := range results {
		var a answer
		if err := json.Unmarshal(r.Value, &a); err != nil {
			t.Fatalf("%s: result %q: %v", id, r.Value, err)
		}
		status := header(r, bridge.HeaderStatus)
		switch id {
		case "bad-json":
			if status != "400" || a.Error == nil {
				t.Errorf("bad JSON: %s %s", status, r.Value)
			}
		case "bad-model":
			if status != "404" || a.Error == nil {
				t.Errorf("unknown model: %s %s", status, r.Value)
			}
		default:
			if status != "200" || a.ID != id || a.Tenant != "team-a" {
				t.Errorf("%s: %s %s", id, status, r.Value)
			}
		}
	}
	dead := consumeUntil(t, cfg.Brokers, cfg.DeadLetterTopic, map[string]bool{"bad-json": true, "bad-model": true})
	if e := header(dead["bad-json"], bridge.HeaderError); !strings.Contains(e, "not JSON") || string(dead["bad-json"].Value) != "not json" {
		t.Errorf("bad JSON dead letter: %q %q", e, dead["bad-json"].Value)
	}
	if e := header(dead["bad-model"], bridge.HeaderError); !strings.Contains(e, "404") {
		t.Errorf("unknown model dead letter: %q", e)
	}
	// Committed: a new member of the group finds nothing left.
	eventuallyCommitted(t, cfg, 22)
}

// TestKafkaBridgeLosesNothing stops a bridge mid-stream and checks that a
// second one answers every request.
func TestKafkaBridgeLosesNothing(t *testing.T) {
	cfg := bridge.Kafka{Topic: "requests", ResultsTopic: "results", DeadLetterTopic: "dead", Group: "g"}
	cfg.Brokers = kafkaCluster(t, cfg.Topic, cfg.ResultsTopic, cfg.DeadLetterTopic)
	m := newModel(t)
	prod := kafkaClient(t, cfg.Brokers)
	want := map[string]bool{}
	for i := range 40 {
		id := fmt.Sprintf("s%d", i)
		produce(t, prod, cfg.Topic, id, request("slow", id))
		want[id] = true
	}
	ctx1, kill := context.WithCancel(context.Background())
	done1 := make(chan error, 1)
	go func() { done1 <- bridge.RunKafka(ctx1, cfg, options(m)) }()
	deadline := time.Now().Add(60 * time.Second)
	for m.count() < 6 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	kill()
	<-done1
	ctx2, cancel := context.WithCancel(context.Background())
	done2 := make(chan error, 1)
	go func() { done2 <- bridge.RunKafka(ctx2, cfg, options(m)) }()
	defer func() {
		cancel()
		<-done2
	}()
	consumeUntil(t, cfg.Brokers, cfg.ResultsTopic, want)
	eventuallyCommitted(t, cfg, 40)
}

// eventuallyCommitted waits until the group's committed offsets cover n
// records of the request topic.
func eventuallyCommitted(t *testing.T, cfg bridge.Kafka, n int64) {
	t.Helper()
	cl := kafkaClient(t, cfg.Brokers)
	deadline := time.Now().Add(30 * time.Second)
	for {
		total, err := fetchCommitted(cl, cfg.Group, cfg.Topic)
		if err == nil && total >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s committed %d of %d records (%v)", cfg.Group, total, n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestBridgeAdmitsUnderTenantLimits: a bridged request waits while the
// tenant's limits refuse it, without using an attempt, runs once admitted,
// and gives the room back.
func TestBridgeAdmitsUnderTenantLimits(t *testing.T) {
	cfg := bridge.Kafka{Topic: "requests", ResultsTopic: "results", DeadLetterTopic: "dead", Group: "sluice-chat"}
	cfg.Brokers = kafkaCluster(t, cfg.Topic, cfg.ResultsTopic, cfg.DeadLetterTopic)
	m := newModel(t)
	prod := kafkaClient(t, cfg.Brokers)
	produce(t, prod, cfg.Topic, "limited", request("sim", "limited"))

	var mu sync.Mutex
	asked, released := 0, 0
	o := options(m)
	o.Admit = func(_ context.Context, job *jobs.Job) (func(int64), time.Duration, bool) {
		mu.Lock()
		defer mu.Unlock()
		if job.Tenant != "team-a" || job.Pool != "chat" {
			t.Errorf("admitted job of tenant %q pool %q", job.Tenant, job.Pool)
		}
		asked++
		if asked <= 2 {
			return nil, time.Millisecond, false // over the tenant's limit
		}
		return func(int64) {
			mu.Lock()
			released++
			mu.Unlock()
		}, 0, true
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- bridge.RunKafka(ctx, cfg, o) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	r := consumeUntil(t, cfg.Brokers, cfg.ResultsTopic, map[string]bool{"limited": true})["limited"]
	var a answer
	if err := json.Unmarshal(r.Value, &a); err != nil || header(r, bridge.HeaderStatus) != "200" || a.Attempt != 1 {
		t.Fatalf("answer %s %s (%v); want 200 from the first attempt", header(r, bridge.HeaderStatus), r.Value, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if asked != 3 || released != 1 || m.callsOf("limited") != 1 {
		t.Fatalf("asked %d, released %d, model calls %d; want 3, 1, 1", asked, released, m.callsOf("limited"))
	}
}

package gateway

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestBridgesFollowReload: a reload that moves a pool's Kafka bridge to
// another topic stops the old consumer and starts the new one, without a
// restart; a reload that removes the bridge stops it.
func TestBridgesFollowReload(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "requests", "requests2", "results", "dead"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	brokers := c.ListenAddrs()
	be := newBackend(t, "b")
	conf := func(topic string) string {
		cfg := "listen: 127.0.0.1:0\nadmin: {listen: \"\"}\nlog: {level: error}\npools:\n" +
			"  - name: chat\n    models: [m1]\n    health_check: {path: \"\"}\n    backends: [{url: " + be.URL + "}]\n"
		if topic != "" {
			cfg += fmt.Sprintf("    bridge: {kafka: {brokers: [%s], topic: %s, results_topic: results, dead_letter_topic: dead, group: sluice-chat}}\n", brokers[0], topic)
		}
		return cfg
	}
	prod, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prod.Close)
	results, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("results"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(results.Close)
	answered := func(key string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		for {
			fs := fetch(ctx, results)
			if ctx.Err() != nil {
				t.Fatalf("no result for %s", key)
			}
			for _, r := range fs {
				if string(r.Key) == key {
					if !strings.Contains(string(r.Value), `"backend":"b"`) {
						t.Fatalf("result of %s: %s", key, r.Value)
					}
					return
				}
			}
		}
	}
	send := func(topic, key string) {
		t.Helper()
		if err := prod.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Key: []byte(key), Value: []byte(chatBody)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}

	g := startGateway(t, conf("requests"))
	send("requests", "first")
	answered("first")

	g.rewrite(conf("requests2"))
	if err := g.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	send("requests2", "moved")
	answered("moved")

	g.rewrite(conf(""))
	if err := g.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	before := be.count()
	send("requests2", "after-removal")
	send("requests", "after-removal-old-topic")
	// Nothing consumes either topic now: the backend sees no request. A
	// bridge still running would have answered within this time.
	time.Sleep(2 * time.Second)
	if n := be.count(); n != before {
		t.Fatalf("a removed bridge still ran %d requests", n-before)
	}
}

func fetch(ctx context.Context, cl *kgo.Client) []*kgo.Record {
	return cl.PollFetches(ctx).Records()
}

package natsstore

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestKeysWhileUpdated: a key rewritten without pause is in every listing
// (the bucket's own key lister missed it in about a third of them); a
// deleted key is listed for a reader to find gone; the filter holds.
func TestKeysWhileUpdated(t *testing.T) {
	ctx := context.Background()
	s, _ := openTestStore(t, time.Minute)
	js := s.js
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "keys", History: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"b.1", "b.2", "b.3", "gone.1", "other"} {
		if _, err := kv.Put(ctx, k, []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if err := kv.Delete(ctx, "gone.1"); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	writing := make(chan struct{})
	go func() {
		defer close(writing)
		for {
			select {
			case <-done:
				return
			default:
			}
			if _, err := kv.Put(ctx, "b.2", []byte("v")); err != nil {
				return
			}
		}
	}()
	defer func() { close(done); <-writing }()
	for range 200 {
		keys, err := Keys(ctx, js, "keys", "b.*")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(keys, []string{"b.1", "b.2", "b.3"}) {
			t.Fatalf("listed %v, want b.1 b.2 b.3", keys)
		}
	}
	if keys, err := Keys(ctx, js, "keys", "gone.*"); err != nil || !slices.Equal(keys, []string{"gone.1"}) {
		t.Fatalf("deleted key listed as %v %v, want gone.1 for a reader to find gone", keys, err)
	}
}

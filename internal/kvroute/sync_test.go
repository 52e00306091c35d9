package kvroute

import (
	"context"
	"encoding/binary"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/redistest"
)

// matchedOn is how many leading blocks of p r's index credits key with.
func matchedOn(r *Router, key string, p []uint64) int {
	rep := (*r.reps.Load())[key]
	if rep == nil {
		return 0
	}
	m := make([]int, 1)
	r.index.Match(p, []uint32{rep.id}, m)
	return m[0]
}

func eventually(t *testing.T, what string, cond func() bool, nudge func()) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		if nudge != nil {
			nudge()
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSyncSharesIndex runs three gateways' routers against a real Redis:
// what one routes, the others route alike, though they never saw it.
func TestSyncSharesIndex(t *testing.T) {
	srv := redistest.Start(t)
	pool := strings.ToLower(regexp.MustCompile(`[^a-z0-9]+`).ReplaceAllString(redistest.UniquePrefix(t), "-"))
	var gw []*Router
	for range 3 {
		r := New(Config{Pool: pool}, Options{Redis: srv.Client(t)})
		errc := make(chan error, 1)
		go func() { errc <- r.Run(context.Background()) }()
		t.Cleanup(func() {
			r.Close()
			if err := <-errc; err != nil {
				t.Error(err)
			}
		})
		gw = append(gw, r)
	}
	bs := backends(4)
	p := prompt(42, 3)
	// Gateway 0 sends the conversation to replica 2 (its only candidate);
	// until the peers have subscribed, its publications are lost, so it
	// repeats them.
	eventually(t, "the peers to learn replica 2's prefix",
		func() bool {
			return matchedOn(gw[1], bs[2].key, p) == len(p) && matchedOn(gw[2], bs[2].key, p) == len(p)
		},
		func() { gw[0].Pick(cands(bs[2]), Request{Blocks: p}) })
	for i, r := range gw[1:] {
		if got := r.Pick(cands(bs...), Request{Blocks: p}); got != bs[2] {
			t.Errorf("gateway %d picked %s for a conversation on %s", i+1, got.Key(), bs[2].key)
		}
	}
	// A peer's message never makes a gateway scrape a replica it does
	// not serve, and a gateway ignores its own messages.
	eventually(t, "gateway 0 to hear the others' picks", func() bool {
		st := gw[0].Status()
		return st.Sync.Received >= 2
	}, nil)
	if st := gw[0].Status(); st.Sync.Sent == 0 || st.Sync.Errors != 0 {
		t.Errorf("gateway 0 sync: %+v", st.Sync)
	}

	// Garbage on the channel is counted and ignored.
	rdb := srv.Client(t)
	if err := rdb.Publish(t.Context(), SyncChannel(pool), "not an update").Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the garbage to be counted", func() bool { return gw[1].Status().Sync.Errors >= 1 }, nil)

	// With Redis gone, picks go on; the failures are counted.
	if !srv.Private() {
		return
	}
	srv.Stop()
	q := prompt(43, 1)
	eventually(t, "a failed publish", func() bool { return gw[0].Status().Sync.Errors > 0 },
		func() { gw[0].Pick(cands(bs...), Request{Blocks: q}) })
}

func TestBatchRoundTrip(t *testing.T) {
	recs := []struct {
		key    string
		blocks []uint64
	}{{"http://a:1", seq(0, 5)}, {"h2c://b:2", nil}, {strings.Repeat("k", syncMaxKey), seq(9, 64)}}
	msg := []byte{syncMagic, syncVersion}
	msg = binary.LittleEndian.AppendUint64(msg, 77)
	for _, r := range recs {
		msg = appendRecord(msg, r.key, r.blocks)
	}
	var scratch []uint64
	i := 0
	sender, err := decodeBatch(msg, 64, &scratch, func(key []byte, blocks []uint64) {
		if string(key) != recs[i].key || !slices.Equal(blocks, recs[i].blocks) && len(blocks)+len(recs[i].blocks) > 0 {
			t.Errorf("record %d: %q %v", i, key, blocks)
		}
		i++
	}, 1)
	if err != nil || sender != 77 || i != len(recs) {
		t.Fatalf("sender %d, %d records, err %v", sender, i, err)
	}
	if _, err := decodeBatch(msg, 63, &scratch, func([]byte, []uint64) {}, 1); err == nil {
		t.Error("a record over maxBlocks decoded")
	}
	n := 0
	if _, err := decodeBatch(msg, 64, &scratch, func([]byte, []uint64) { n++ }, 77); err != nil || n != 0 {
		t.Errorf("own message: %d records, err %v", n, err)
	}
}

func FuzzDecodeBatch(f *testing.F) {
	msg := binary.LittleEndian.AppendUint64([]byte{syncMagic, syncVersion}, 5)
	f.Add(appendRecord(slices.Clone(msg), "http://x:1", seq(0, 3)))
	f.Add(msg)
	f.Add([]byte{syncMagic, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		var scratch []uint64
		total := 0
		_, _ = decodeBatch(data, 16, &scratch, func(key []byte, blocks []uint64) {
			if len(key) > syncMaxKey || len(blocks) > 16 {
				t.Fatalf("record over its bounds: key %d bytes, %d blocks", len(key), len(blocks))
			}
			total += len(key) + 8*len(blocks)
		}, 1)
		if total > len(data) {
			t.Fatalf("decoded %d bytes of records from %d", total, len(data))
		}
	})
}

package kvroute

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Index sharing between gateways. Each pick's (replica, blocks) record is
// appended to a batch that is published on the pool's Redis channel every
// syncFlushEvery; every gateway applies its peers' records to its own
// index, so N gateways route as one. Pub/sub is fire-and-forget: a gateway
// that is down or slow misses updates, and a full batch drops records; the
// index is approximate anyway, and the next request of a conversation
// repairs a missed record.
const (
	syncFlushEvery = 50 * time.Millisecond
	// syncMaxMessage bounds one batch; records that do not fit before the
	// next flush are dropped and counted.
	syncMaxMessage = 256 << 10
	// syncMaxKey bounds a replica key in a message.
	syncMaxKey = 2048

	syncMagic   = 'K'
	syncVersion = 1
	syncHeader  = 10 // magic, version, sender id
)

// SyncChannel is the Redis pub/sub channel of a pool's index updates.
func SyncChannel(pool string) string { return "sluice:kv_aware:" + pool }

// SyncStatus counts a router's index sharing.
type SyncStatus struct {
	Channel string `json:"channel"`
	// Sent and Dropped count records published and records dropped
	// because a batch was full or its publish failed.
	Sent    uint64 `json:"sent"`
	Dropped uint64 `json:"dropped"`
	// Received counts peers' records applied; Errors publish failures and
	// malformed messages.
	Received uint64 `json:"received"`
	Errors   uint64 `json:"errors"`
}

type syncer struct {
	r       *Router
	rdb     redis.UniversalClient
	channel string
	self    uint64 // this gateway's id, to skip its own messages

	mu      sync.Mutex
	batch   []byte // header + records, published at the next flush
	records int
	spare   []byte
	kick    chan struct{}

	sent, dropped, received, errs atomic.Uint64
	failing                       atomic.Bool // a publish failed and was logged
}

func newSyncer(r *Router, rdb redis.UniversalClient) *syncer {
	return &syncer{
		r:       r,
		rdb:     rdb,
		channel: SyncChannel(r.cfg.Pool),
		self:    rand.Uint64() | 1,
		kick:    make(chan struct{}, 1),
	}
}

func (s *syncer) status() SyncStatus {
	return SyncStatus{Channel: s.channel, Sent: s.sent.Load(), Dropped: s.dropped.Load(), Received: s.received.Load(), Errors: s.errs.Load()}
}

// publish queues a record; it never blocks on Redis.
func (s *syncer) publish(key string, blocks []uint64) {
	need := binary.MaxVarintLen64*2 + len(key) + 8*len(blocks)
	s.mu.Lock()
	if len(s.batch) == 0 {
		s.batch = append(s.batch[:0], syncMagic, syncVersion)
		s.batch = binary.LittleEndian.AppendUint64(s.batch, s.self)
	}
	if len(s.batch)+need > syncMaxMessage || len(key) > syncMaxKey {
		s.mu.Unlock()
		s.dropped.Add(1)
		s.r.m.sentDropped.Inc()
		s.wake()
		return
	}
	s.batch = appendRecord(s.batch, key, blocks)
	s.records++
	full := len(s.batch) > syncMaxMessage/2
	s.mu.Unlock()
	if full {
		s.wake()
	}
}

func (s *syncer) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func appendRecord(b []byte, key string, blocks []uint64) []byte {
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = append(b, key...)
	b = binary.AppendUvarint(b, uint64(len(blocks)))
	for _, h := range blocks {
		b = binary.LittleEndian.AppendUint64(b, h)
	}
	return b
}

func (s *syncer) publishLoop(ctx context.Context) {
	t := s.r.clk.NewTicker(syncFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		case <-s.kick:
		}
		s.flush(ctx)
	}
}

// flush publishes the pending batch, if any.
func (s *syncer) flush(ctx context.Context) {
	s.mu.Lock()
	msg, n := s.batch, s.records
	s.batch, s.records, s.spare = s.spare[:0], 0, nil
	s.mu.Unlock()
	if n == 0 {
		s.giveBack(msg)
		return
	}
	err := s.rdb.Publish(ctx, s.channel, msg).Err()
	s.giveBack(msg)
	if err != nil {
		s.errs.Add(1)
		s.dropped.Add(uint64(n))
		s.r.m.sentErr.Inc()
		if ctx.Err() == nil && !s.failing.Swap(true) {
			s.r.log.Warn("kv_aware: cannot share index updates; routing on this gateway's own history", "channel", s.channel, "err", err)
		}
		return
	}
	if s.failing.Swap(false) {
		s.r.log.Info("kv_aware: sharing index updates again", "channel", s.channel)
	}
	s.sent.Add(uint64(n))
	s.r.m.sentOK.Add(float64(n))
}

// giveBack keeps a published buffer for the next batch (Publish has
// written it by the time it returns).
func (s *syncer) giveBack(b []byte) {
	s.mu.Lock()
	if s.spare == nil && cap(b) <= 2*syncMaxMessage {
		s.spare = b[:0]
	}
	s.mu.Unlock()
}

func (s *syncer) subscribeLoop(ctx context.Context) {
	ps := s.rdb.Subscribe(ctx, s.channel)
	defer ps.Close()
	ch := ps.Channel()
	blocks := make([]uint64, 0, s.r.cfg.MaxBlocks)
	for {
		select {
		case <-ctx.Done():
			return
		case msg, ok := <-ch:
			if !ok {
				return
			}
			s.apply([]byte(msg.Payload), &blocks)
		}
	}
}

// apply records a peer's message in the index.
func (s *syncer) apply(msg []byte, scratch *[]uint64) {
	sender, err := decodeBatch(msg, s.r.cfg.MaxBlocks, scratch, func(key []byte, blocks []uint64) {
		if rep := s.r.peerReplica(key); rep != nil {
			s.r.index.Record(blocks, rep.id)
			s.received.Add(1)
			s.r.m.recvOK.Inc()
		}
	}, s.self)
	if err != nil {
		s.errs.Add(1)
		s.r.m.recvErr.Inc()
		s.r.log.Debug("kv_aware: malformed index update", "channel", s.channel, "sender", sender, "err", err)
	}
}

// peerReplica returns the replica a peer's record names, creating it as
// non-local (not scraped) if needed.
func (r *Router) peerReplica(key []byte) *replica {
	if rep := (*r.reps.Load())[string(key)]; rep != nil {
		return rep
	}
	return r.replicaFor(string(key), false)
}

var errBadBatch = errors.New("malformed index update")

// decodeBatch calls fn for each record of msg, with blocks decoded into
// *scratch (valid only during the call). A message from skip (this
// gateway) is ignored. Records before a malformed one are applied; the
// index tolerates partial updates.
func decodeBatch(msg []byte, maxBlocks int, scratch *[]uint64, fn func(key []byte, blocks []uint64), skip uint64) (uint64, error) {
	if len(msg) < syncHeader || msg[0] != syncMagic {
		return 0, fmt.Errorf("%w: bad header", errBadBatch)
	}
	if msg[1] != syncVersion {
		return 0, fmt.Errorf("%w: version %d", errBadBatch, msg[1])
	}
	sender := binary.LittleEndian.Uint64(msg[2:syncHeader])
	if sender == skip {
		return sender, nil
	}
	b := msg[syncHeader:]
	for len(b) > 0 {
		kl, k := binary.Uvarint(b)
		if k <= 0 || kl > syncMaxKey || kl > uint64(len(b)-k) {
			return sender, fmt.Errorf("%w: bad key length", errBadBatch)
		}
		key := b[k : k+int(kl)]
		b = b[k+int(kl):]
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(maxBlocks) || n*8 > uint64(len(b)-k) {
			return sender, fmt.Errorf("%w: bad block count", errBadBatch)
		}
		b = b[k:]
		blocks := (*scratch)[:0]
		for i := uint64(0); i < n; i++ {
			blocks = append(blocks, binary.LittleEndian.Uint64(b[8*i:]))
		}
		*scratch = blocks
		b = b[8*n:]
		fn(key, blocks)
	}
	return sender, nil
}

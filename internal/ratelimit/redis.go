package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// errShortReply is an admit script reply with fewer values than it
// returns, which only a different script under the same name could cause.
var errShortReply = errors.New("short reply from the admit script")

// backgroundTimeout bounds one batch of settlements or renewals.
const backgroundTimeout = 2 * time.Second

// maxBatch bounds the commands pipelined in one round trip.
const maxBatch = 256

// keys returns the Redis keys of tenant's state. The tenant is a hash tag,
// so the three keys live on one Redis Cluster slot, as a script needs.
func (l *Limiter) keys(tenant string) (req, tok, conc string) {
	base := l.prefix + "{" + tenant + "}:"
	return base + "r", base + "t", base + "c"
}

// nowArg is the time sent to the scripts: "" lets Redis use its own clock.
func (l *Limiter) nowArg() any {
	if l.redisTime {
		return ""
	}
	return micros(l.clock.Now())
}

// admitRedis decides t with one script call.
func (l *Limiter) admitRedis(ctx context.Context, t *Ticket) error {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	var id string
	if t.q.conc > 0 {
		id = l.newTicketID()
	}
	req, tok, conc := l.keys(t.tenant)
	res, err := admitScript.Run(ctx, l.rdb, []string{req, tok, conc},
		l.nowArg(), t.q.rpm, t.q.tpm, t.q.conc, t.q.cost, id, int64(lease/time.Microsecond)).Int64Slice()
	if err != nil {
		return fmt.Errorf("redis admit: %w", err)
	}
	if len(res) < 6 {
		return errShortReply
	}
	t.refused = refusal(res[0])
	t.retryAfter = time.Duration(res[1]) * time.Microsecond
	if t.refused == refusedConcurrency {
		t.retryAfter = max(t.retryAfter, concurrencyRetry)
	}
	t.reqLevel, t.tokLevel = res[2], res[3]
	if t.refused == refusedNone {
		t.viaRedis = true
		if id != "" {
			t.id = id
			l.active.Store(t, struct{}{})
		}
	}
	return nil
}

// settlement is one Done waiting to be sent to Redis.
type settlement struct {
	t     *Ticket
	delta int64
}

// settleRedis queues a Redis ticket's settlement without blocking.
func (l *Limiter) settleRedis(t *Ticket, delta int64) {
	if t.id != "" {
		l.active.Delete(t)
	}
	if l.degraded.Load() {
		l.m.settlementsDropped.Inc()
		return
	}
	select {
	case l.settle <- settlement{t, delta}:
	default:
		l.m.settlementsDropped.Inc()
	}
}

// settleBatch sends first and whatever else is queued, in one round trip.
func (l *Limiter) settleBatch(ctx context.Context, first settlement) {
	batch := []settlement{first}
	for len(batch) < maxBatch {
		select {
		case s := <-l.settle:
			batch = append(batch, s)
			continue
		default:
		}
		break
	}
	if l.degraded.Load() {
		l.m.settlementsDropped.Add(float64(len(batch)))
		return
	}
	bctx, cancel := context.WithTimeout(ctx, backgroundTimeout)
	defer cancel()
	err := l.pipelineScript(bctx, settleScript, len(batch), func(p redis.Pipeliner, i int) {
		s := batch[i]
		_, tok, conc := l.keys(s.t.tenant)
		settleScript.EvalSha(bctx, p, []string{tok, conc}, l.nowArg(), s.t.q.tpm, s.delta, s.t.id)
	})
	if err != nil {
		l.m.settlementsDropped.Add(float64(len(batch)))
		if ctx.Err() == nil {
			l.lostRedis(err)
		}
	}
}

// drainSettlements sends what is still queued at Close.
func (l *Limiter) drainSettlements() {
	ctx, cancel := context.WithTimeout(context.Background(), backgroundTimeout)
	defer cancel()
	for {
		select {
		case s := <-l.settle:
			l.settleBatch(ctx, s)
		default:
			return
		}
	}
}

// renewLeases extends the concurrency slots of requests still running, so
// a long stream keeps its slot while a dead gateway's slots expire.
func (l *Limiter) renewLeases(ctx context.Context) {
	if l.rdb == nil || l.degraded.Load() {
		return
	}
	var tickets []*Ticket
	l.active.Range(func(k, _ any) bool {
		tickets = append(tickets, k.(*Ticket))
		return true
	})
	for len(tickets) > 0 {
		n := min(len(tickets), maxBatch)
		batch := tickets[:n]
		tickets = tickets[n:]
		bctx, cancel := context.WithTimeout(ctx, backgroundTimeout)
		err := l.pipelineScript(bctx, renewScript, len(batch), func(p redis.Pipeliner, i int) {
			_, _, conc := l.keys(batch[i].tenant)
			renewScript.EvalSha(bctx, p, []string{conc}, l.nowArg(), int64(lease/time.Microsecond), batch[i].id)
		})
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				l.lostRedis(err)
			}
			return
		}
	}
}

// pipelineScript sends n calls of script in one pipeline. If Redis has
// lost the script (a restart, SCRIPT FLUSH), it loads it and sends the batch
// again: NOSCRIPT means the script was absent for the pipeline, so no call
// ran and sending it again applies each call once.
func (l *Limiter) pipelineScript(ctx context.Context, script *redis.Script, n int, add func(p redis.Pipeliner, i int)) error {
	for attempt := 0; ; attempt++ {
		p := l.rdb.Pipeline()
		for i := range n {
			add(p, i)
		}
		_, err := p.Exec(ctx)
		if err == nil {
			return nil
		}
		if attempt == 0 && strings.HasPrefix(err.Error(), "NOSCRIPT") {
			if err := script.Load(ctx, l.rdb).Err(); err != nil {
				return fmt.Errorf("redis script load: %w", err)
			}
			continue
		}
		return fmt.Errorf("redis pipeline: %w", err)
	}
}

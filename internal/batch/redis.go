package batch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisStorage keeps the Batch API's data in Redis, beside the jobs of a
// redis job store with prefix P; every key carries the hash tag {P:batch},
// so on a Redis Cluster they share one slot (the compare-and-set script
// touches two of them):
//
//   - {P:batch}:file:<id>, string: a file's record (JSON);
//   - {P:batch}:files:<tenant>, set: the tenant's file IDs;
//   - {P:batch}:expiry, sorted set: file IDs by expiry (Unix seconds);
//   - {P:batch}:data:<name>, list: the content of file or blob <name> in
//     chunks of 1 MiB, written under a temporary name and renamed into
//     place, so a reader never sees half of it;
//   - {P:batch}:batch:<id>, hash: data (the record as JSON) and rev (its
//     revision, which updates compare and set in one script);
//   - {P:batch}:batches:<tenant>, set: the tenant's batch IDs;
//   - {P:batch}:active, hash: batch ID → tenant, the batches not final.
//
// Durability is the Redis server's own (appendonly).
type redisStorage struct {
	rdb redis.UniversalClient
	p   string
}

var _ storage = (*redisStorage)(nil)

const chunkSize = 1 << 20

func newRedisStorage(rdb redis.UniversalClient, prefix string) *redisStorage {
	return &redisStorage{rdb: rdb, p: "{" + prefix + ":batch}:"}
}

// updateScript replaces a batch record if its revision is ARGV[1], and
// unlists it from the active hash when ARGV[3] is "1". It returns the new
// revision, 0 on a revision mismatch, -1 if the record is gone.
var updateScript = redis.NewScript(`
local rev = redis.call('HGET', KEYS[1], 'rev')
if not rev then return -1 end
if tonumber(rev) ~= tonumber(ARGV[1]) then return 0 end
local next = tonumber(rev) + 1
redis.call('HSET', KEYS[1], 'data', ARGV[2], 'rev', next)
if ARGV[3] == '1' then redis.call('HDEL', KEYS[2], ARGV[4]) end
return next
`)

func (s *redisStorage) writeChunks(ctx context.Context, name string, r io.Reader) (int64, error) {
	tmp := s.p + "data:" + name + ".tmp"
	if err := s.rdb.Del(ctx, tmp).Err(); err != nil {
		return 0, err
	}
	buf := make([]byte, chunkSize)
	var total int64
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if perr := s.rdb.RPush(ctx, tmp, buf[:n]).Err(); perr != nil {
				return 0, perr
			}
			total += int64(n)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			s.rdb.Del(ctx, tmp)
			return 0, err
		}
	}
	if total == 0 {
		// An empty list does not exist: keep one empty chunk.
		if err := s.rdb.RPush(ctx, tmp, "").Err(); err != nil {
			return 0, err
		}
	}
	if err := s.rdb.Rename(ctx, tmp, s.p+"data:"+name).Err(); err != nil {
		return 0, err
	}
	return total, nil
}

func (s *redisStorage) putFile(ctx context.Context, f *File, content io.Reader) error {
	n, err := s.writeChunks(ctx, f.ID, content)
	if err != nil {
		return fmt.Errorf("store file %s: %w", f.ID, err)
	}
	f.Bytes = n
	data, err := json.Marshal(f)
	if err != nil {
		return err
	}
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, s.p+"file:"+f.ID, data, 0)
		p.SAdd(ctx, s.p+"files:"+tenantKey(f.Tenant), f.ID)
		if !f.ExpiresAt.IsZero() {
			p.ZAdd(ctx, s.p+"expiry", redis.Z{Score: float64(f.ExpiresAt.Unix()), Member: f.ID})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record file %s: %w", f.ID, err)
	}
	return nil
}

func (s *redisStorage) file(ctx context.Context, tenant, id string) (*File, error) {
	data, err := s.rdb.Get(ctx, s.p+"file:"+id).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, errNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read file %s: %w", id, err)
	}
	var f File
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("decode file %s: %w", id, err)
	}
	if f.Tenant != tenant {
		return nil, errNotFound
	}
	return &f, nil
}

func (s *redisStorage) openFile(ctx context.Context, id string) (io.ReadCloser, error) {
	return s.openBlob(ctx, id)
}

func (s *redisStorage) files(ctx context.Context, tenant string) ([]*File, error) {
	ids, err := s.rdb.SMembers(ctx, s.p+"files:"+tenantKey(tenant)).Result()
	if err != nil {
		return nil, fmt.Errorf("list files: %w", err)
	}
	var out []*File
	for _, id := range ids {
		f, err := s.file(ctx, tenant, id)
		if errors.Is(err, errNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

func (s *redisStorage) deleteFile(ctx context.Context, tenant, id string) error {
	if _, err := s.file(ctx, tenant, id); err != nil {
		return err
	}
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, s.p+"file:"+id, s.p+"data:"+id)
		p.SRem(ctx, s.p+"files:"+tenantKey(tenant), id)
		p.ZRem(ctx, s.p+"expiry", id)
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete file %s: %w", id, err)
	}
	return nil
}

func (s *redisStorage) expiring(ctx context.Context, t time.Time) ([]*File, error) {
	ids, err := s.rdb.ZRangeByScore(ctx, s.p+"expiry", &redis.ZRangeBy{Min: "-inf", Max: strconv.FormatInt(t.Unix(), 10)}).Result()
	if err != nil {
		return nil, fmt.Errorf("list expired files: %w", err)
	}
	var out []*File
	for _, id := range ids {
		data, err := s.rdb.Get(ctx, s.p+"file:"+id).Bytes()
		if errors.Is(err, redis.Nil) {
			// Deleted; only the index entry was left.
			s.rdb.ZRem(ctx, s.p+"expiry", id)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read file %s: %w", id, err)
		}
		var f File
		if err := json.Unmarshal(data, &f); err != nil {
			return nil, fmt.Errorf("decode file %s: %w", id, err)
		}
		if f.expired(t) { // the scores are whole seconds
			out = append(out, &f)
		}
	}
	return out, nil
}

func (s *redisStorage) createBatch(ctx context.Context, b *record) error {
	data, err := json.Marshal(b)
	if err != nil {
		return err
	}
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, s.p+"active", b.ID, b.Tenant)
		p.HSet(ctx, s.p+"batch:"+b.ID, "data", data, "rev", 1)
		p.SAdd(ctx, s.p+"batches:"+tenantKey(b.Tenant), b.ID)
		return nil
	})
	if err != nil {
		return fmt.Errorf("record batch %s: %w", b.ID, err)
	}
	b.rev = 1
	return nil
}

func (s *redisStorage) batch(ctx context.Context, tenant, id string) (*record, error) {
	vals, err := s.rdb.HMGet(ctx, s.p+"batch:"+id, "data", "rev").Result()
	if err != nil {
		return nil, fmt.Errorf("read batch %s: %w", id, err)
	}
	data, ok1 := vals[0].(string)
	revs, ok2 := vals[1].(string)
	if !ok1 || !ok2 {
		return nil, errNotFound
	}
	var rev uint64
	if _, err := fmt.Sscan(revs, &rev); err != nil {
		return nil, fmt.Errorf("batch %s revision %q: %w", id, revs, err)
	}
	b, err := decodeRecord([]byte(data), rev)
	if err != nil {
		return nil, err
	}
	if b.Tenant != tenant {
		return nil, errNotFound
	}
	return b, nil
}

func (s *redisStorage) updateBatch(ctx context.Context, b *record) error {
	data, err := json.Marshal(b)
	if err != nil {
		return err
	}
	final := "0"
	if b.Status.Final() {
		final = "1"
	}
	n, err := updateScript.Run(ctx, s.rdb, []string{s.p + "batch:" + b.ID, s.p + "active"}, b.rev, data, final, b.ID).Int64()
	switch {
	case err != nil:
		return fmt.Errorf("update batch %s: %w", b.ID, err)
	case n == 0:
		return errConflict
	case n < 0:
		return errNotFound
	}
	b.rev = uint64(n)
	return nil
}

func (s *redisStorage) batches(ctx context.Context, tenant string) ([]*record, error) {
	ids, err := s.rdb.SMembers(ctx, s.p+"batches:"+tenantKey(tenant)).Result()
	if err != nil {
		return nil, fmt.Errorf("list batches: %w", err)
	}
	var out []*record
	for _, id := range ids {
		b, err := s.batch(ctx, tenant, id)
		if errors.Is(err, errNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

func (s *redisStorage) active(ctx context.Context) ([]ref, error) {
	m, err := s.rdb.HGetAll(ctx, s.p+"active").Result()
	if err != nil {
		return nil, fmt.Errorf("list active batches: %w", err)
	}
	out := make([]ref, 0, len(m))
	for id, tenant := range m {
		out = append(out, ref{tenant: tenant, id: id})
	}
	return out, nil
}

func (s *redisStorage) putBlob(ctx context.Context, name string, data io.Reader) error {
	if _, err := s.writeChunks(ctx, name, data); err != nil {
		return fmt.Errorf("store %s: %w", name, err)
	}
	return nil
}

// openBlob copies blob name to a temporary file, chunk by chunk, and
// returns it: a reader that fetched chunks lazily would have to keep a
// context.
func (s *redisStorage) openBlob(ctx context.Context, name string) (io.ReadCloser, error) {
	key := s.p + "data:" + name
	n, err := s.rdb.LLen(ctx, key).Result()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if n == 0 {
		return nil, errNotFound
	}
	f, err := os.CreateTemp("", "sluice-batch-*")
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	out := spooled{f}
	for i := range n {
		b, err := s.rdb.LIndex(ctx, key, i).Bytes()
		if errors.Is(err, redis.Nil) {
			err = errors.New("changed while read")
		}
		if err == nil {
			_, err = f.Write(b)
		}
		if err != nil {
			out.Close()
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		out.Close()
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return out, nil
}

func (s *redisStorage) deleteBlob(ctx context.Context, name string) error {
	if err := s.rdb.Del(ctx, s.p+"data:"+name).Err(); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

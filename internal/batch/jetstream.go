package batch

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-ai/sluice/internal/jobs/natsstore"
)

// jsStorage keeps the Batch API's data in JetStream, beside the jobs:
//
//   - key-value bucket N_batch: file records f.<tenant>.<file id>, batch
//     records b.<tenant>.<batch id> (updated by compare-and-set on the
//     entry's revision), and the active list a.<batch id> → tenant;
//   - object store N_files: file contents by file id, and each batch's
//     plan and result segments (<batch id>/plan, <batch id>/seg/<nonce>).
//
// <tenant> is "t" and the tenant's name in unpadded base64url, which keeps
// any name a valid key.
type jsStorage struct {
	js   jetstream.JetStream
	kv   jetstream.KeyValue
	objs jetstream.ObjectStore
}

var _ storage = (*jsStorage)(nil)

// openJetStream creates (or opens) the bucket and object store named after
// the job store name.
func openJetStream(ctx context.Context, js jetstream.JetStream, name string, replicas int) (*jsStorage, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:   name + "_batch",
		History:  1,
		Storage:  jetstream.FileStorage,
		Replicas: max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("create bucket %s_batch: %w", name, err)
	}
	objs, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:   name + "_files",
		Storage:  jetstream.FileStorage,
		Replicas: max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("create object store %s_files: %w", name, err)
	}
	return &jsStorage{js: js, kv: kv, objs: objs}, nil
}

func tenantKey(tenant string) string {
	return "t" + base64.RawURLEncoding.EncodeToString([]byte(tenant))
}

func fileKey(tenant, id string) string  { return "f." + tenantKey(tenant) + "." + id }
func batchKey(tenant, id string) string { return "b." + tenantKey(tenant) + "." + id }
func activeKey(id string) string        { return "a." + id }

func (s *jsStorage) putFile(ctx context.Context, f *File, content io.Reader) error {
	info, err := s.objs.Put(ctx, jetstream.ObjectMeta{Name: f.ID}, content)
	if err != nil {
		return fmt.Errorf("store file %s: %w", f.ID, err)
	}
	f.Bytes = int64(info.Size)
	data, err := json.Marshal(f)
	if err != nil {
		return err
	}
	if _, err := s.kv.Put(ctx, fileKey(f.Tenant, f.ID), data); err != nil {
		return fmt.Errorf("record file %s: %w", f.ID, err)
	}
	return nil
}

func (s *jsStorage) file(ctx context.Context, tenant, id string) (*File, error) {
	e, err := s.kv.Get(ctx, fileKey(tenant, id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, errNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read file %s: %w", id, err)
	}
	var f File
	if err := json.Unmarshal(e.Value(), &f); err != nil {
		return nil, fmt.Errorf("decode file %s: %w", id, err)
	}
	return &f, nil
}

func (s *jsStorage) openFile(ctx context.Context, id string) (io.ReadCloser, error) {
	return s.openBlob(ctx, id)
}

func (s *jsStorage) files(ctx context.Context, tenant string) ([]*File, error) {
	var out []*File
	err := s.each(ctx, "f."+tenantKey(tenant)+".*", func(v []byte) error {
		var f File
		if err := json.Unmarshal(v, &f); err != nil {
			return err
		}
		out = append(out, &f)
		return nil
	})
	return out, err
}

func (s *jsStorage) expiring(ctx context.Context, t time.Time) ([]*File, error) {
	var out []*File
	err := s.each(ctx, "f.>", func(v []byte) error {
		var f File
		if err := json.Unmarshal(v, &f); err != nil {
			return err
		}
		if f.expired(t) {
			out = append(out, &f)
		}
		return nil
	})
	return out, err
}

func (s *jsStorage) deleteFile(ctx context.Context, tenant, id string) error {
	if _, err := s.file(ctx, tenant, id); err != nil {
		return err
	}
	if err := s.kv.Purge(ctx, fileKey(tenant, id)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("delete file %s: %w", id, err)
	}
	return s.deleteBlob(ctx, id)
}

func (s *jsStorage) createBatch(ctx context.Context, b *record) error {
	data, err := json.Marshal(b)
	if err != nil {
		return err
	}
	// Listed as active first: an active entry without a record is dropped
	// by the scheduler, a record that is never run would be stuck.
	if _, err := s.kv.Put(ctx, activeKey(b.ID), []byte(b.Tenant)); err != nil {
		return fmt.Errorf("list batch %s: %w", b.ID, err)
	}
	rev, err := s.kv.Create(ctx, batchKey(b.Tenant, b.ID), data)
	if err != nil {
		return fmt.Errorf("record batch %s: %w", b.ID, err)
	}
	b.rev = rev
	return nil
}

func (s *jsStorage) batch(ctx context.Context, tenant, id string) (*record, error) {
	e, err := s.kv.Get(ctx, batchKey(tenant, id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, errNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read batch %s: %w", id, err)
	}
	return decodeRecord(e.Value(), e.Revision())
}

func decodeRecord(data []byte, rev uint64) (*record, error) {
	var b record
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("decode batch: %w", err)
	}
	b.rev = rev
	return &b, nil
}

func (s *jsStorage) updateBatch(ctx context.Context, b *record) error {
	data, err := json.Marshal(b)
	if err != nil {
		return err
	}
	rev, err := s.kv.Update(ctx, batchKey(b.Tenant, b.ID), data, b.rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return errConflict
	}
	if err != nil {
		return fmt.Errorf("update batch %s: %w", b.ID, err)
	}
	b.rev = rev
	if b.Status.Final() {
		if err := s.kv.Purge(ctx, activeKey(b.ID)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("unlist batch %s: %w", b.ID, err)
		}
	}
	return nil
}

func (s *jsStorage) batches(ctx context.Context, tenant string) ([]*record, error) {
	var out []*record
	err := s.each(ctx, "b."+tenantKey(tenant)+".*", func(v []byte) error {
		b, err := decodeRecord(v, 0)
		if err != nil {
			return err
		}
		out = append(out, b)
		return nil
	})
	return out, err
}

func (s *jsStorage) active(ctx context.Context) ([]ref, error) {
	keys, err := natsstore.Keys(ctx, s.js, s.kv.Bucket(), "a.*")
	if err != nil {
		return nil, fmt.Errorf("list active batches: %w", err)
	}
	var out []ref
	for _, key := range keys {
		id := strings.TrimPrefix(key, "a.")
		e, err := s.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read active batch %s: %w", id, err)
		}
		out = append(out, ref{tenant: string(e.Value()), id: id})
	}
	return out, nil
}

// each calls fn with the value of every key matching filter.
func (s *jsStorage) each(ctx context.Context, filter string, fn func([]byte) error) error {
	keys, err := natsstore.Keys(ctx, s.js, s.kv.Bucket(), filter)
	if err != nil {
		return fmt.Errorf("list %s: %w", filter, err)
	}
	for _, key := range keys {
		e, err := s.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // deleted
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", key, err)
		}
		if err := fn(e.Value()); err != nil {
			return fmt.Errorf("decode %s: %w", key, err)
		}
	}
	return nil
}

func (s *jsStorage) putBlob(ctx context.Context, name string, data io.Reader) error {
	if _, err := s.objs.Put(ctx, jetstream.ObjectMeta{Name: name}, data); err != nil {
		return fmt.Errorf("store %s: %w", name, err)
	}
	return nil
}

func (s *jsStorage) openBlob(ctx context.Context, name string) (io.ReadCloser, error) {
	r, err := s.objs.Get(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, errNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return r, nil
}

func (s *jsStorage) deleteBlob(ctx context.Context, name string) error {
	if err := s.objs.Delete(ctx, name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

package natsstore

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// Keys lists the keys of bucket that match filter (a subject pattern such
// as "b.*"), including keys whose last entry is a delete marker: a reader
// gets those as not found. It reads the bucket's stream state rather than
// using the bucket's key lister, which starts a watcher and misses a key
// updated while the watcher starts (a record in flux, such as a running
// job's or batch's, drops out of a listing now and then).
func Keys(ctx context.Context, js jetstream.JetStream, bucket, filter string) ([]string, error) {
	st, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return nil, fmt.Errorf("list keys of %s: %w", bucket, err)
	}
	prefix := "$KV." + bucket + "."
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(prefix+filter))
	if err != nil {
		return nil, fmt.Errorf("list keys of %s: %w", bucket, err)
	}
	keys := make([]string, 0, len(info.State.Subjects))
	for subject := range info.State.Subjects {
		keys = append(keys, strings.TrimPrefix(subject, prefix))
	}
	slices.Sort(keys)
	return keys, nil
}

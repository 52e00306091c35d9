package bridge_test

import (
	"context"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// fetchCommitted sums the offsets group committed on topic.
func fetchCommitted(cl *kgo.Client, group, topic string) (int64, error) {
	resp, err := kadm.NewClient(cl).FetchOffsets(context.Background(), group)
	if err != nil {
		return 0, err
	}
	var total int64
	resp.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic && o.Err == nil {
			total += o.At
		}
	})
	return total, nil
}

package natsstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/jobs/jobstest"
	"github.com/sluice-ai/sluice/internal/jobs/natsstore"
)

func embeddedNamespaces(b *testing.B) jobstest.NewNamespace {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := natsstore.StartEmbedded(ctx, b.TempDir(), jobstest.TestLogger())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.Shutdown)
	return newNamespace(e.Connect)
}

// BenchmarkEmbeddedThroughput: submit → completion on the embedded store.
func BenchmarkEmbeddedThroughput(b *testing.B) {
	jobstest.BenchmarkThroughput(b, embeddedNamespaces(b))
}

// BenchmarkEmbeddedSubmitLatency: submit latency at 500 jobs/s.
func BenchmarkEmbeddedSubmitLatency(b *testing.B) {
	jobstest.BenchmarkSubmitLatency(b, embeddedNamespaces(b), 500)
}

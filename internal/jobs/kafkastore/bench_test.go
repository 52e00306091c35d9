package kafkastore_test

import (
	"testing"

	"github.com/sluice-ai/sluice/internal/jobs/jobstest"
	"github.com/sluice-ai/sluice/internal/redistest"
)

// BenchmarkThroughput: submit → completion on kfake (records in a private
// redis-server).
func BenchmarkThroughput(b *testing.B) {
	jobstest.BenchmarkThroughput(b, newNamespace(startKafka(b), redistest.Start(b).URL(), 6))
}

// BenchmarkSubmitLatency: submit latency at 500 jobs/s.
func BenchmarkSubmitLatency(b *testing.B) {
	jobstest.BenchmarkSubmitLatency(b, newNamespace(startKafka(b), redistest.Start(b).URL(), 6), 500)
}

package amqpstore_test

import (
	"testing"

	"github.com/sluice-ai/sluice/internal/jobs/amqpstore/amqptest"
	"github.com/sluice-ai/sluice/internal/jobs/jobstest"
	"github.com/sluice-ai/sluice/internal/redistest"
)

// BenchmarkThroughput: submit → completion on RabbitMQ (records in a
// private redis-server).
func BenchmarkThroughput(b *testing.B) {
	jobstest.BenchmarkThroughput(b, newNamespace(amqptest.URL(b), redistest.Start(b).URL()))
}

// BenchmarkSubmitLatency: submit latency at 500 jobs/s.
func BenchmarkSubmitLatency(b *testing.B) {
	jobstest.BenchmarkSubmitLatency(b, newNamespace(amqptest.URL(b), redistest.Start(b).URL()), 500)
}

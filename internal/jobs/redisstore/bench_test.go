package redisstore_test

import (
	"testing"

	"github.com/sluice-ai/sluice/internal/jobs/jobstest"
)

// BenchmarkThroughput: submit → completion on a private redis-server.
func BenchmarkThroughput(b *testing.B) {
	jobstest.BenchmarkThroughput(b, newNamespace(startRedis(b)))
}

// BenchmarkSubmitLatency: submit latency at 500 jobs/s.
func BenchmarkSubmitLatency(b *testing.B) {
	jobstest.BenchmarkSubmitLatency(b, newNamespace(startRedis(b)), 500)
}

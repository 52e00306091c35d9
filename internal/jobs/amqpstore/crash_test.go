package amqpstore_test

import (
	"context"
	"os"
	"testing"

	"github.com/sluice-ai/sluice/internal/jobs"
	"github.com/sluice-ai/sluice/internal/jobs/amqpstore"
	"github.com/sluice-ai/sluice/internal/jobs/amqpstore/amqptest"
	"github.com/sluice-ai/sluice/internal/jobs/jobrecords"
	"github.com/sluice-ai/sluice/internal/jobs/jobstest"
	"github.com/sluice-ai/sluice/internal/redistest"
)

// The child's store, from the parent's environment.
const (
	crashAMQPEnv   = "SLUICE_CRASH_AMQP_URL"
	crashRedisEnv  = "SLUICE_CRASH_REDIS_URL"
	crashPrefixEnv = "SLUICE_CRASH_PREFIX"
)

// TestCrashHelper is the child of TestKillNineDurability; it does nothing
// in a normal run.
func TestCrashHelper(t *testing.T) {
	jobstest.CrashChild(t, func(ctx context.Context) (jobs.Store, error) {
		prefix := os.Getenv(crashPrefixEnv)
		rec, err := jobrecords.Dial(ctx, os.Getenv(crashRedisEnv), jobrecords.Options{Prefix: prefix})
		if err != nil {
			return nil, err
		}
		return amqpstore.Open(ctx, os.Getenv(crashAMQPEnv), rec, amqpstore.Options{Prefix: prefix, Lease: jobstest.CrashLease, Logger: jobstest.TestLogger()})
	})
}

// TestKillNineDurability: jobs accepted by a gateway on RabbitMQ survive
// its SIGKILL and run to completion on the next one, each result recorded
// once.
func TestKillNineDurability(t *testing.T) {
	jobstest.KillNine(t, "TestCrashHelper", []string{
		crashAMQPEnv + "=" + amqptest.URL(t),
		crashRedisEnv + "=" + redistest.Start(t).URL(),
		crashPrefixEnv + "=" + amqptest.Prefix(),
	})
}

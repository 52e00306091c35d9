package kafkastore_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/jobs"
	"github.com/sluice-ai/sluice/internal/jobs/jobrecords"
	"github.com/sluice-ai/sluice/internal/jobs/jobstest"
	"github.com/sluice-ai/sluice/internal/jobs/kafkastore"
	"github.com/sluice-ai/sluice/internal/redistest"
)

// The child's store, from the parent's environment.
const (
	crashBrokersEnv = "SLUICE_CRASH_KAFKA_BROKERS"
	crashRedisEnv   = "SLUICE_CRASH_REDIS_URL"
	crashPrefixEnv  = "SLUICE_CRASH_PREFIX"
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
		return kafkastore.Open(ctx, strings.Split(os.Getenv(crashBrokersEnv), ","), rec, kafkastore.Options{
			Prefix: prefix, Lease: jobstest.CrashLease, Partitions: 3, SessionTimeout: 2 * time.Second,
			Logger: jobstest.TestLogger()})
	})
}

// TestKillNineDurability: jobs accepted by a gateway on Kafka survive its
// SIGKILL and run to completion on the next one, each result recorded
// once. The cluster (kfake) runs in this process, outside the gateways.
func TestKillNineDurability(t *testing.T) {
	jobstest.KillNine(t, "TestCrashHelper", []string{
		crashBrokersEnv + "=" + strings.Join(startKafka(t), ","),
		crashRedisEnv + "=" + redistest.Start(t).URL(),
		crashPrefixEnv + "=" + fmt.Sprintf("crash.%d", os.Getpid()),
	})
}

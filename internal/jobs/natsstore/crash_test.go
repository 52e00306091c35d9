package natsstore_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/sluice-ai/sluice/internal/jobs"
	"github.com/sluice-ai/sluice/internal/jobs/jobstest"
	"github.com/sluice-ai/sluice/internal/jobs/natsstore"
)

// TestHelperProcess is the child of TestKillNineDurability: a gateway with
// the embedded store in the crash test's directory (which every child
// generation shares). It does nothing in a normal run.
func TestHelperProcess(t *testing.T) {
	jobstest.CrashChild(t, func(ctx context.Context) (jobs.Store, error) {
		dir := filepath.Join(os.Getenv("SLUICE_JOBS_CRASH_DIR"), "jobs")
		return natsstore.OpenEmbedded(ctx, dir, natsstore.Options{Lease: jobstest.CrashLease, Logger: jobstest.TestLogger()})
	})
}

// TestKillNineDurability: jobs accepted by an embedded store survive
// SIGKILL of the gateway and run to completion on the next one, each
// result recorded once (jobstest.KillNine, shared with the other stores).
func TestKillNineDurability(t *testing.T) {
	jobstest.KillNine(t, "TestHelperProcess", nil)
}

package jobs_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: the
// Service's dispatcher, lease keeper, janitor, callbacks and subscribers
// all stop with Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

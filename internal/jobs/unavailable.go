package jobs

import (
	"errors"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
)

// ErrStoreUnavailable wraps the error of a job store that cannot be opened
// or repaired (files damaged beyond what the store can recover, a server
// that cannot be reached). A gateway that gets it still serves live
// inference: it answers the jobs API with 503 job_store_unavailable,
// reports the store down (NewStoreUpGauge), and logs the cause. Any other
// error from opening a store is a configuration mistake.
var ErrStoreUnavailable = errors.New("job store unavailable")

// NewStoreUpGauge returns the gauge sluice_jobs_store_up: 1 while the job
// store is open, 0 when it could not be opened (ErrStoreUnavailable) and
// the jobs API answers 503. The gateway registers it and sets it after
// each attempt to open the store.
func NewStoreUpGauge() prometheus.Gauge {
	return prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sluice_jobs_store_up",
		Help: "1 if the job store is open, 0 if it could not be opened or repaired (the jobs API answers 503).",
	})
}

// UnavailableHandler answers every request with 503 job_store_unavailable
// in the OpenAI error shape: the jobs API of a gateway whose store could
// not be opened (ErrStoreUnavailable). The data plane's own
// Prefer: respond-async should answer the same.
func UnavailableHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		storeDown().Write(w)
	})
}

package config

import (
	"reflect"
	"time"
)

// Every default lives in this file. Default fills the top level; list
// elements and optional blocks get theirs from the Default* functions below
// when the decoder creates them, so a key the file leaves out takes its
// default and a key the file sets, even to zero, keeps the file's value.

// Default returns the configuration used for every key a file leaves out.
// It has no pools, so it does not validate on its own.
func Default() *Config {
	return &Config{
		Listen:  ":8080",
		Admin:   Admin{Listen: "127.0.0.1:8081"},
		DataDir: "./sluice-data",
		Log:     Log{Level: "info", Format: "text"},
		Limits: Limits{
			MaxRequestBody:    32 << 20,
			ReadHeaderTimeout: Duration(10 * time.Second),
			DrainTimeout:      Duration(30 * time.Second),
			BodyReadTimeout:   Duration(30 * time.Second),
			MaxBufferedBody:   512 << 20,
			MaxHeaderBytes:    60 << 10,
			MaxHeaders:        100,
			HTTP2MaxStreams:   100,
		},
		Cache: Cache{Memory: 256 << 20},
		Jobs: Jobs{
			Store:         "embedded",
			Concurrency:   64,
			MaxAttempts:   3,
			Retention:     Duration(24 * time.Hour),
			MaxFileSize:   200 << 20,
			FileRetention: Duration(30 * 24 * time.Hour),
		},
		Tracing: Tracing{Protocol: "http", SampleRatio: 1},
	}
}

// DefaultPool returns the defaults of one entry of pools. It has no name
// and no replicas.
func DefaultPool() Pool {
	return Pool{
		Balancer: "p2c_ewma",
		HashOn:   "client_ip",
		KVAware: KVAware{
			MaxBlocks:      2048,
			IndexEntries:   1 << 18,
			IndexTTL:       Duration(10 * time.Minute),
			LoadFactor:     1.25,
			MetricsPath:    "/metrics",
			ScrapeInterval: Duration(time.Second),
			ScrapeTimeout:  Duration(500 * time.Millisecond),
			MaxMetricsSize: 4 << 20,
			StaleAfter:     3,
			Share:          true,
		},
		Queue:     Queue{Size: 1024, Timeout: Duration(30 * time.Second)},
		SlowStart: Duration(10 * time.Second),
		HealthCheck: HealthCheck{
			Path:               "/health",
			Interval:           Duration(5 * time.Second),
			Timeout:            Duration(2 * time.Second),
			HealthyThreshold:   2,
			UnhealthyThreshold: 3,
		},
		OutlierDetection: OutlierDetection{
			ConsecutiveFailures: 5,
			Window:              Duration(10 * time.Second),
			MinRequests:         20,
			EjectionTime:        Duration(30 * time.Second),
			MaxEjectedPercent:   50,
		},
		Retry: Retry{
			Attempts: 2,
			Budget:   0.2,
			Backoff:  Duration(25 * time.Millisecond),
			On:       []string{"connect_failure", "502", "503", "504"},
		},
		Timeouts: Timeouts{
			Connect:    Duration(3 * time.Second),
			FirstByte:  Duration(60 * time.Second),
			StreamIdle: Duration(60 * time.Second),
		},
	}
}

// DefaultScorers are the kv_aware scorers' weights for the keys a pool's
// scorers map leaves out.
func DefaultScorers() map[string]float64 {
	return map[string]float64{"prefix": 2, "queue": 1, "kv_cache": 0.5, "latency": 1, "session": 0}
}

// ScorerWeights returns the pool's kv_aware weights: its scorers over
// DefaultScorers.
func (p *Pool) ScorerWeights() map[string]float64 {
	w := DefaultScorers()
	for k, v := range p.Scorers {
		w[k] = v
	}
	return w
}

// DefaultBackend returns the defaults of one entry of a pool's backends.
func DefaultBackend() Backend { return Backend{Weight: 1} }

// DefaultProcess returns the defaults of a pool's process block.
func DefaultProcess() Process {
	return Process{
		ReadyPath:    "/health",
		StartTimeout: Duration(60 * time.Second),
		StopTimeout:  Duration(30 * time.Second),
		Replicas:     1,

		UnhealthyTimeout: Duration(30 * time.Second),
	}
}

// DefaultKubernetes returns the defaults of a pool's kubernetes block.
func DefaultKubernetes() Kubernetes {
	return Kubernetes{Namespace: "default", ScaleTarget: ScaleTarget{Kind: "Deployment"}}
}

// DefaultAutoscale returns the defaults of a pool's autoscale block.
func DefaultAutoscale() Autoscale {
	return Autoscale{
		Min:               1,
		Max:               8,
		TargetConcurrency: 4,
		StableWindow:      Duration(60 * time.Second),
		PanicWindow:       Duration(6 * time.Second),
		PanicThreshold:    2,
		ScaleDownDelay:    Duration(30 * time.Second),
		Predictive:        Predictive{Season: Duration(24 * time.Hour)},
		Signals:           Signals{ScrapeInterval: Duration(5 * time.Second)},
		SLO:               SLO{Percentile: 0.9, MaxBoost: 4},
	}
}

// DefaultActuator returns the defaults of a pool's autoscale.actuator block.
func DefaultActuator() Actuator { return Actuator{Timeout: Duration(30 * time.Second)} }

// DefaultRoute returns the defaults of one entry of routes.
func DefaultRoute() Route { return Route{PathPrefix: "/"} }

// DefaultAPIKey returns the defaults of one entry of auth.keys.
func DefaultAPIKey() APIKey { return APIKey{Models: []string{"*"}} }

// DefaultJWT returns the defaults of the auth.jwt block.
func DefaultJWT() JWT { return JWT{TenantClaim: "sub", Models: []string{"*"}} }

// elementDefaults gives the decoder a fresh default for each struct type it
// creates inside a list or behind a pointer. A type not listed starts zero.
var elementDefaults = map[reflect.Type]func() any{
	reflect.TypeFor[Pool]():       func() any { return DefaultPool() },
	reflect.TypeFor[Backend]():    func() any { return DefaultBackend() },
	reflect.TypeFor[Process]():    func() any { return DefaultProcess() },
	reflect.TypeFor[Kubernetes](): func() any { return DefaultKubernetes() },
	reflect.TypeFor[Autoscale]():  func() any { return DefaultAutoscale() },
	reflect.TypeFor[Actuator]():   func() any { return DefaultActuator() },
	reflect.TypeFor[Route]():      func() any { return DefaultRoute() },
	reflect.TypeFor[APIKey]():     func() any { return DefaultAPIKey() },
	reflect.TypeFor[JWT]():        func() any { return DefaultJWT() },
}

// newDefault returns a pointer to a new t holding t's default.
func newDefault(t reflect.Type) reflect.Value {
	p := reflect.New(t)
	if f, ok := elementDefaults[t]; ok {
		p.Elem().Set(reflect.ValueOf(f()))
	}
	return p
}

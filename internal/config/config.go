// Package config defines sluice's configuration: one Config tree, the defaults
// for every key in one place (Default), strict YAML loading with ${VAR}
// expansion, and validation that reports every problem with its file position.
package config

// Config is the whole of a sluice configuration file. The zero value is not
// useful; start from Default() (Load does).
type Config struct {
	// Listen is the data-plane address (HTTP/1.1 and h2c, or HTTP/1.1 and
	// HTTP/2 over TLS when TLS is set). Default ":8080".
	Listen string `yaml:"listen"`
	// TLS enables TLS on Listen. Nil (the default) serves plain HTTP.
	TLS *TLS `yaml:"tls"`
	// Admin is the admin server (metrics, health, API, UI).
	Admin Admin `yaml:"admin"`
	// DataDir holds embedded stores. Default "./sluice-data".
	DataDir string `yaml:"data_dir"`
	// Log sets the log level and format.
	Log Log `yaml:"log"`
	// Limits bounds what a client may send.
	Limits Limits `yaml:"limits"`
	// Redis is optional shared state; an empty URL (the default) disables it.
	Redis Redis `yaml:"redis"`
	// Pools are the model services sluice fronts. At least one is required.
	Pools []Pool `yaml:"pools"`
	// Routes are matched before model-based routing. Default none.
	Routes []Route `yaml:"routes"`
	// Auth enables authentication. Nil (the default) is an open gateway.
	Auth *Auth `yaml:"auth"`
	// Cache sizes the response cache shared by pools that enable caching.
	Cache Cache `yaml:"cache"`
	// Jobs configures the async job system.
	Jobs Jobs `yaml:"jobs"`
	// Tracing configures OpenTelemetry export.
	Tracing Tracing `yaml:"tracing"`

	// Path is the file the config was loaded from ("" when built in code).
	Path string `yaml:"-"`
	// pos maps a key path such as "pools[0].backends[1].url" to where it
	// stands in the file, so Validate can point at it.
	pos positions
}

// TLS names the certificate and key files of the data-plane listener. Both
// files are re-read when they change.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Admin configures the admin server.
type Admin struct {
	// Listen is the admin address. Default "127.0.0.1:8081"; "" disables it.
	Listen string `yaml:"listen"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error. Default info.
	Level string `yaml:"level"`
	// Format is text or json. Default text.
	Format string `yaml:"format"`
}

// Limits bounds client input.
type Limits struct {
	// MaxRequestBody is the largest request body accepted. Default 32MiB.
	MaxRequestBody Size `yaml:"max_request_body"`
	// ReadHeaderTimeout bounds reading request headers. Default 10s.
	ReadHeaderTimeout Duration `yaml:"read_header_timeout"`
	// DrainTimeout bounds graceful shutdown: in-flight requests and streams
	// get this long to finish after SIGTERM. Default 30s.
	DrainTimeout Duration `yaml:"drain_timeout"`
}

// Redis is optional shared state.
type Redis struct {
	// URL such as redis://127.0.0.1:6379/0. Default "" (no Redis).
	URL string `yaml:"url"`
}

// Pool is a set of replicas serving the same models.
type Pool struct {
	// Name is [a-z0-9_-]+ and unique.
	Name string `yaml:"name"`
	// Models are the model names (globs allowed) this pool serves.
	Models []string `yaml:"models"`
	// Balancer picks a backend per request. Default p2c_ewma.
	Balancer string `yaml:"balancer"`
	// HashOn is the consistent_hash key: header:NAME, cookie:NAME,
	// client_ip or json:FIELD. Default client_ip.
	HashOn string `yaml:"hash_on"`
	// Backends are static replicas.
	Backends []Backend `yaml:"backends"`
	// Process runs local replicas under sluice's supervision.
	Process *Process `yaml:"process"`
	// Kubernetes discovers and scales replicas in a cluster.
	Kubernetes *Kubernetes `yaml:"kubernetes"`
	// MaxConcurrency caps in-flight requests per backend; 0 (default) = none.
	MaxConcurrency int `yaml:"max_concurrency"`
	// Queue holds requests while no backend can take them.
	Queue Queue `yaml:"queue"`
	// HealthCheck configures active health checks.
	HealthCheck HealthCheck `yaml:"health_check"`
	// OutlierDetection configures passive health (ejection).
	OutlierDetection OutlierDetection `yaml:"outlier_detection"`
	// Retry configures retries of failed attempts.
	Retry Retry `yaml:"retry"`
	// Timeouts bound each upstream attempt.
	Timeouts Timeouts `yaml:"timeouts"`
	// Fallback pools are tried in order when this one cannot serve.
	Fallback []string `yaml:"fallback"`
	// Cache enables response caching for this pool when TTL > 0.
	Cache PoolCache `yaml:"cache"`
	// Autoscale makes the replica count follow demand (process and
	// kubernetes pools). Nil (the default) keeps a fixed count.
	Autoscale *Autoscale `yaml:"autoscale"`
}

// Backend is one static replica.
type Backend struct {
	// URL is http://, https:// or h2c:// (HTTP/2 cleartext, for gRPC).
	URL string `yaml:"url"`
	// Weight is used by weighted_round_robin. Default 1.
	Weight int `yaml:"weight"`
}

// Queue bounds the per-pool wait queue.
type Queue struct {
	// Size is the most requests that may wait. Default 1024; 0 disables waiting.
	Size int `yaml:"size"`
	// Timeout is the longest a request waits. Default 30s.
	Timeout Duration `yaml:"timeout"`
}

// HealthCheck configures active health checks.
type HealthCheck struct {
	// Path is probed with GET; "" disables active checks. Default /health.
	Path string `yaml:"path"`
	// Interval between probes. Default 5s.
	Interval Duration `yaml:"interval"`
	// Timeout of one probe. Default 2s.
	Timeout Duration `yaml:"timeout"`
	// HealthyThreshold consecutive successes mark a backend healthy. Default 2.
	HealthyThreshold int `yaml:"healthy_threshold"`
	// UnhealthyThreshold consecutive failures mark it unhealthy. Default 3.
	UnhealthyThreshold int `yaml:"unhealthy_threshold"`
}

// OutlierDetection configures passive health checking.
type OutlierDetection struct {
	// ConsecutiveFailures ejects a backend; 0 disables. Default 5.
	ConsecutiveFailures int `yaml:"consecutive_failures"`
	// ErrorRate ejects a backend whose windowed error share exceeds it;
	// 0 (default) disables.
	ErrorRate float64 `yaml:"error_rate"`
	// Window for ErrorRate. Default 10s.
	Window Duration `yaml:"window"`
	// MinRequests in Window before ErrorRate applies. Default 20.
	MinRequests int `yaml:"min_requests"`
	// EjectionTime is the base ejection; it grows with repeated ejections.
	// Default 30s.
	EjectionTime Duration `yaml:"ejection_time"`
	// MaxEjectedPercent of a pool's backends may be ejected at once. Default 50.
	MaxEjectedPercent int `yaml:"max_ejected_percent"`
}

// Retry configures retries.
type Retry struct {
	// Attempts is the most retries after the first try. Default 2.
	Attempts int `yaml:"attempts"`
	// Budget caps retries at this share of requests in flight. Default 0.2.
	Budget float64 `yaml:"budget"`
	// Backoff is the base delay, doubled per retry, with jitter. Default 25ms.
	Backoff Duration `yaml:"backoff"`
	// On lists what is retried: connect_failure, timeout, or HTTP statuses.
	// Default [connect_failure, 502, 503, 504].
	On []string `yaml:"on"`
}

// Timeouts bound an upstream attempt.
type Timeouts struct {
	// Connect bounds dialing. Default 3s.
	Connect Duration `yaml:"connect"`
	// FirstByte bounds the wait for response headers. Default 60s.
	FirstByte Duration `yaml:"first_byte"`
	// StreamIdle bounds the gap between body reads. Default 60s.
	StreamIdle Duration `yaml:"stream_idle"`
}

// PoolCache enables response caching.
type PoolCache struct {
	// TTL > 0 enables caching. Default 0 (off).
	TTL Duration `yaml:"ttl"`
	// PerTenant adds the tenant to the cache key. Default false.
	PerTenant bool `yaml:"per_tenant"`
}

// Process runs local replicas.
type Process struct {
	// Command is argv; {port} is replaced by a free port. A first element of
	// "sluice" means sluice's own executable.
	Command []string `yaml:"command"`
	// Env adds environment variables.
	Env map[string]string `yaml:"env"`
	// ReadyPath answers 200 when a replica may join. Default /health.
	ReadyPath string `yaml:"ready_path"`
	// StartTimeout bounds waiting for ReadyPath. Default 60s.
	StartTimeout Duration `yaml:"start_timeout"`
	// StopTimeout bounds draining before SIGTERM. Default 30s.
	StopTimeout Duration `yaml:"stop_timeout"`
	// Replicas is the fixed count when Autoscale is nil. Default 1.
	Replicas int `yaml:"replicas"`
}

// Kubernetes discovers replicas from a Service and scales a workload.
type Kubernetes struct {
	// Namespace of the Service. Default "default".
	Namespace string `yaml:"namespace"`
	// Service whose EndpointSlices list the replicas.
	Service string `yaml:"service"`
	// Port is the endpoint port name or number. Default the first port.
	Port string `yaml:"port"`
	// Kubeconfig path; "" uses in-cluster config.
	Kubeconfig string `yaml:"kubeconfig"`
	// ScaleTarget is the workload whose scale subresource the autoscaler writes.
	ScaleTarget ScaleTarget `yaml:"scale_target"`
}

// ScaleTarget names a scalable workload.
type ScaleTarget struct {
	// Kind is Deployment or StatefulSet. Default Deployment.
	Kind string `yaml:"kind"`
	Name string `yaml:"name"`
}

// Autoscale configures the autoscaler of a pool.
type Autoscale struct {
	Min               int      `yaml:"min"`                 // default 1
	Max               int      `yaml:"max"`                 // default 8
	TargetConcurrency float64  `yaml:"target_concurrency"`  // default 4
	StableWindow      Duration `yaml:"stable_window"`       // default 60s
	PanicWindow       Duration `yaml:"panic_window"`        // default 6s
	PanicThreshold    float64  `yaml:"panic_threshold"`     // default 2.0
	ScaleDownDelay    Duration `yaml:"scale_down_delay"`    // default 30s
	ScaleToZeroAfter  Duration `yaml:"scale_to_zero_after"` // default 0s
	Predictive        Predictive `yaml:"predictive"`
}

// Predictive configures the seasonal demand forecast.
type Predictive struct {
	Enabled bool     `yaml:"enabled"` // default false
	Season  Duration `yaml:"season"`  // default 24h
}

// Route sends matching requests to a pool before model routing applies.
type Route struct {
	// Host matches the request host (without port); "" matches any.
	Host string `yaml:"host"`
	// PathPrefix matches the request path. Default "/".
	PathPrefix string `yaml:"path_prefix"`
	// Pool is the target pool's name.
	Pool string `yaml:"pool"`
}

// Auth configures authentication and per-tenant limits.
type Auth struct {
	Keys []APIKey `yaml:"keys"`
	JWT  *JWT     `yaml:"jwt"`
}

// APIKey is one tenant's key.
type APIKey struct {
	// Name is the tenant.
	Name string `yaml:"name"`
	// KeySHA256 is the hex SHA-256 of the key. Or set Key.
	KeySHA256 string `yaml:"key_sha256"`
	// Key is the plain key (use ${VAR}); hashed at load.
	Key string `yaml:"key"`
	// Models are globs this tenant may use. Default ["*"].
	Models []string `yaml:"models"`
	Limits TenantLimits `yaml:"limits"`
}

// JWT configures bearer-token verification.
type JWT struct {
	JWKSURL     string       `yaml:"jwks_url"`
	JWKSFile    string       `yaml:"jwks_file"`
	Issuer      string       `yaml:"issuer"`
	Audience    string       `yaml:"audience"`
	TenantClaim string       `yaml:"tenant_claim"` // default sub
	Models      []string     `yaml:"models"`       // default ["*"]
	Limits      TenantLimits `yaml:"limits"`
}

// TenantLimits are per-tenant limits; 0 means unlimited.
type TenantLimits struct {
	RPM         int `yaml:"rpm"`
	TPM         int `yaml:"tpm"`
	Concurrency int `yaml:"concurrency"`
}

// Cache sizes the response cache.
type Cache struct {
	// Memory bounds the in-process L1. Default 256MiB.
	Memory Size `yaml:"memory"`
	// Redis adds redis.url as a shared L2. Default false.
	Redis bool `yaml:"redis"`
}

// Jobs configures async jobs.
type Jobs struct {
	// Store is embedded (default), nats://host:port, or redis.
	Store string `yaml:"store"`
	// Concurrency is jobs dispatched at once per gateway. Default 64.
	Concurrency int `yaml:"concurrency"`
	// MaxAttempts per job. Default 3.
	MaxAttempts int `yaml:"max_attempts"`
	// Retention keeps finished jobs this long. Default 24h.
	Retention Duration `yaml:"retention"`
	// WebhookSecret signs callbacks. Default "" (callbacks unsigned... refused).
	WebhookSecret string `yaml:"webhook_secret"`
}

// Tracing configures OpenTelemetry.
type Tracing struct {
	// OTLPEndpoint receives OTLP/HTTP traces; "" (default) disables tracing.
	OTLPEndpoint string `yaml:"otlp_endpoint"`
}

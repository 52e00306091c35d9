// Package config defines sluice's configuration: one Config tree, the defaults
// for every key in one place (Default), strict YAML loading with ${VAR}
// expansion, and validation that reports every problem with its file position.
//
// Load and Parse decode a file onto Default. A list element or optional
// block the file writes (a pool, a backend, autoscale, ...) starts from its
// own default (DefaultPool, DefaultBackend, DefaultAutoscale, ...), so a
// key the file leaves out keeps its default and a key it sets, even to 0 or
// "", keeps the file's value. A null value ("key:" or "key: ~") counts as
// not set, except that it removes an optional block.
//
// Decoding is strict: an unknown or repeated key, a value of the wrong type,
// a malformed duration or size, or a YAML syntax error is a problem. Anchors,
// aliases and merge keys (<<) work as in YAML.
//
// In string values, ${NAME} is replaced by the environment variable NAME
// (an error when NAME is unset) and ${NAME:-default} by NAME or, when it is
// unset or empty, default; $${ is a literal ${. Keys are never expanded,
// and a value from the environment stays one value whatever it holds, so it
// cannot add YAML structure; it does read as a number or boolean where the
// key wants one, quoted or not. Inside [...] or {...}, quote a ${NAME}:
// unquoted, its braces end the flow collection.
//
// Every problem found, not only the first, comes back in an Errors, each as
// FILE:LINE:COL: key.path: what is wrong and what to do.
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
	// KEDA serves KEDA's external-scaler gRPC interface over sluice's
	// demand signal, for clusters where KEDA actuates.
	KEDA KEDA `yaml:"keda"`

	// Path is the file the config was loaded from ("" when built in code).
	// It names the file in errors.
	Path string `yaml:"-"`
	// pos maps a key path such as "pools[0].backends[1].url" to where it
	// stands in the file, so Validate can point at it. Nil when built in
	// code.
	pos positions
}

// TLS names the certificate and key files of the data-plane listener. Both
// files are re-read when they change.
type TLS struct {
	// CertFile is the PEM certificate chain. Required.
	CertFile string `yaml:"cert_file"`
	// KeyFile is the PEM private key. Required.
	KeyFile string `yaml:"key_file"`
}

// Admin configures the admin server.
type Admin struct {
	// Listen is the admin address. Default "127.0.0.1:8081"; "" disables it.
	Listen string `yaml:"listen"`
	// Token, when set, is required as "Authorization: Bearer <token>" on
	// every admin request but /healthz and /readyz. Use ${VAR}. Default ""
	// (no token: bind the admin listener where only operators reach it).
	Token string `yaml:"token"`
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
	// BodyReadTimeout bounds reading a request body the gateway buffers
	// (to route it by model, retry it, cache it): a client that sends it
	// slower is answered 408. Default 30s.
	BodyReadTimeout Duration `yaml:"body_read_timeout"`
	// MaxBufferedBody bounds the request bytes the gateway holds in memory
	// at once, across every request; beyond it new requests are answered
	// 503 until bodies drain. Default 512MiB.
	MaxBufferedBody Size `yaml:"max_buffered_body"`
	// MaxHeaderBytes bounds a request's header block; larger ones are
	// answered 431. Default 60KiB (as Envoy).
	MaxHeaderBytes Size `yaml:"max_header_bytes"`
	// MaxHeaders bounds the number of request header fields; more are
	// answered 431. Default 100 (as Envoy).
	MaxHeaders int `yaml:"max_headers"`
	// HTTP2MaxStreams bounds concurrent streams per HTTP/2 connection.
	// Default 100.
	HTTP2MaxStreams int `yaml:"http2_max_streams"`
}

// Redis is optional shared state.
type Redis struct {
	// URL such as redis://127.0.0.1:6379/0 (also rediss:// and unix://).
	// Default "" (no Redis).
	URL string `yaml:"url"`
}

// Pool is a set of replicas serving the same models.
type Pool struct {
	// Name is [a-z0-9_-]+ and unique. Required.
	Name string `yaml:"name"`
	// Models are the model names this pool serves; globs are allowed (see
	// MatchModel). The same name may not appear in two pools. Default none:
	// the pool is then reached only through routes or fallback.
	Models []string `yaml:"models"`
	// Balancer picks a backend per request. Default p2c_ewma.
	Balancer string `yaml:"balancer"`
	// HashOn is the consistent_hash key: header:NAME, cookie:NAME,
	// client_ip or json:FIELD. Default client_ip.
	HashOn string `yaml:"hash_on"`
	// Scorers weigh the kv_aware balancer's scorers: prefix, queue,
	// kv_cache, latency and session, each >= 0. A scorer left out keeps its
	// default (DefaultScorers: prefix 2, queue 1, kv_cache 0.5, latency 1,
	// session 0); 0 turns one off. Only with balancer kv_aware. Default none.
	Scorers map[string]float64 `yaml:"scorers"`
	// KVAware tunes the kv_aware balancer; ignored by the others.
	KVAware KVAware `yaml:"kv_aware"`
	// Backends are static replicas. Exactly one of Backends, Process and
	// Kubernetes is set.
	Backends []Backend `yaml:"backends"`
	// UpstreamHeaders are set on every request to the pool's backends, e.g.
	// {Authorization: "Bearer ${VLLM_KEY}"} for a vLLM started with
	// --api-key. The client's own credentials never reach a backend; these
	// are what does. Values expand ${VAR} and are never logged or shown.
	// Default none.
	UpstreamHeaders map[string]string `yaml:"upstream_headers"`
	// Process runs local replicas under sluice's supervision. Default nil.
	Process *Process `yaml:"process"`
	// Kubernetes discovers and scales replicas in a cluster. Default nil.
	Kubernetes *Kubernetes `yaml:"kubernetes"`
	// MaxConcurrency caps in-flight requests per backend; 0 (default) = none.
	MaxConcurrency int `yaml:"max_concurrency"`
	// SlowStart ramps the share of a backend that joins or rejoins the pool
	// from 10% to 100% over this long, so a cold replica is not flooded.
	// Default 10s; 0 disables.
	SlowStart Duration `yaml:"slow_start"`
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
	// Fallback pools are tried in order when this one cannot serve. Default
	// none. They must exist and form no cycle.
	Fallback []string `yaml:"fallback"`
	// Cache enables response caching for this pool when TTL > 0.
	Cache PoolCache `yaml:"cache"`
	// Autoscale makes the replica count follow demand (process and
	// kubernetes pools). Nil (the default) keeps a fixed count.
	Autoscale *Autoscale `yaml:"autoscale"`
	// Bridge feeds the pool from a RabbitMQ queue or a Kafka topic. Nil
	// (the default): none.
	Bridge *Bridge `yaml:"bridge"`
}

// KVAware tunes the kv_aware balancer (docs/balancing.md).
type KVAware struct {
	// MaxBlocks is the most 128-byte blocks a prompt is indexed by; a
	// longer prompt is routed by load alone. Default 2048 (256 KiB).
	MaxBlocks int `yaml:"max_blocks"`
	// IndexEntries bounds the prefix index, in blocks (about 76 bytes
	// each). Default 262144 (about 20 MiB).
	IndexEntries int `yaml:"index_entries"`
	// IndexTTL is how long a replica is believed to hold a prompt block
	// no request has refreshed. Default 10m.
	IndexTTL Duration `yaml:"index_ttl"`
	// LoadFactor is c: a replica over c times the mean load (consistent
	// hashing with bounded loads) is skipped for prefix affinity. Default
	// 1.25; at least 1.
	LoadFactor float64 `yaml:"load_factor"`
	// MetricsPath is scraped on each replica for its queue and KV-cache
	// usage (vLLM, SGLang and TGI names). Default /metrics.
	MetricsPath string `yaml:"metrics_path"`
	// ScrapeInterval between scrapes of a replica. Default 1s; 0 turns
	// scraping off (load is then the gateway's own in-flight counts).
	ScrapeInterval Duration `yaml:"scrape_interval"`
	// ScrapeTimeout bounds one scrape; at most ScrapeInterval. Default 500ms.
	ScrapeTimeout Duration `yaml:"scrape_timeout"`
	// MaxMetricsSize caps a replica's /metrics body. Default 4MiB.
	MaxMetricsSize Size `yaml:"max_metrics_size"`
	// StaleAfter is how many scrape intervals a scraped value is used for.
	// Default 3.
	StaleAfter int `yaml:"stale_after"`
	// Share exchanges prefix-index updates with the other gateways through
	// redis.url (when set), so that several gateways route as one.
	// Default true.
	Share bool `yaml:"share"`
}

// Backend is one static replica.
type Backend struct {
	// URL is http://, https:// or h2c:// (HTTP/2 cleartext, for gRPC)
	// followed by host[:port] and nothing else; h2c needs the port.
	URL string `yaml:"url"`
	// Weight is used by weighted_round_robin. Default 1.
	Weight int `yaml:"weight"`
	// Headers are set on every request to this backend, over the pool's
	// upstream_headers of the same name (credentials of a key-protected
	// model server). Values expand ${VAR} and are never logged or shown.
	// Default none.
	Headers map[string]string `yaml:"headers"`
}

// Queue bounds the per-pool wait queue.
type Queue struct {
	// Size is the most requests that may wait. Default 1024; 0 disables waiting.
	Size int `yaml:"size"`
	// Timeout is the longest a request waits. Default 30s.
	Timeout Duration `yaml:"timeout"`
	// Reserve is the share of the pool's capacity (max_concurrency times
	// the ready backends) that low-priority requests (X-Sluice-Priority:
	// low, batch lines) never take: they start only while fewer than
	// (1 - reserve) × capacity requests are in flight, and wait otherwise;
	// high and normal requests may use all of it. 0 to 1, 1 excluded.
	// Default 0: no reserve. Needs max_concurrency.
	Reserve float64 `yaml:"reserve"`
}

// HealthCheck configures active health checks.
type HealthCheck struct {
	// Path is probed with GET; "" disables active checks. Default /health.
	Path string `yaml:"path"`
	// Interval between probes. Default 5s.
	Interval Duration `yaml:"interval"`
	// Timeout of one probe. Default 2s, or Interval when that is shorter.
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
	// PerTenant is kept for old configs: entries are per tenant unless
	// Shared is set. Default false.
	PerTenant bool `yaml:"per_tenant"`
	// Shared lets tenants share entries: one tenant's answer serves
	// another's identical request, and X-Sluice-Cache: hit tells a tenant
	// that someone sent that prompt before. Default false (per tenant).
	Shared bool `yaml:"shared"`
}

// Process runs local replicas.
type Process struct {
	// Command is argv; {port} is replaced by a free port, {id} by the
	// replica's id and {gpu} by its index from 0 (for CUDA_VISIBLE_DEVICES).
	// A first element of "sluice" means sluice's own executable. Required;
	// {port} must appear in an argument or in an Env value.
	Command []string `yaml:"command"`
	// Env adds environment variables; {port}, {id} and {gpu} are replaced
	// in values too.
	// Default none.
	Env map[string]string `yaml:"env"`
	// ReadyPath answers 200 when a replica may join. Default /health.
	ReadyPath string `yaml:"ready_path"`
	// StartTimeout bounds waiting for ReadyPath. Default 60s.
	StartTimeout Duration `yaml:"start_timeout"`
	// StopTimeout bounds draining before SIGTERM. Default 30s; 0 sends
	// SIGTERM at once.
	StopTimeout Duration `yaml:"stop_timeout"`
	// UnhealthyTimeout: a ready replica whose ReadyPath has not answered
	// 200 for this long (hung but alive) is killed and restarted with
	// backoff. It leaves rotation at its second failed probe. Default 30s;
	// 0 turns the probing off.
	UnhealthyTimeout Duration `yaml:"unhealthy_timeout"`
	// Replicas is the fixed count when Autoscale is nil (ignored with
	// Autoscale). Default 1.
	Replicas int `yaml:"replicas"`
}

// Kubernetes discovers replicas from a Service and scales a workload.
type Kubernetes struct {
	// Namespace of the Service. Default "default".
	Namespace string `yaml:"namespace"`
	// Service whose EndpointSlices list the replicas. Required.
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
	// Name of the workload. Required when the pool autoscales.
	Name string `yaml:"name"`
}

// Autoscale configures the autoscaler of a pool.
type Autoscale struct {
	// Min is the fewest replicas. Default 1; 0 allows scaling to zero.
	Min int `yaml:"min"`
	// Max is the most replicas. Default 8.
	Max int `yaml:"max"`
	// TargetConcurrency is the desired demand (in-flight + waiting requests
	// + pending jobs) per replica. Default 4.
	TargetConcurrency float64 `yaml:"target_concurrency"`
	// StableWindow is the window demand is averaged over. Default 60s.
	StableWindow Duration `yaml:"stable_window"`
	// PanicWindow is the short window that detects bursts; at most
	// StableWindow. Default 6s.
	PanicWindow Duration `yaml:"panic_window"`
	// PanicThreshold: the autoscaler panics (scales up at once, never down)
	// when panic-window demand needs this many times the ready replicas.
	// Default 2.0.
	PanicThreshold float64 `yaml:"panic_threshold"`
	// ScaleDownDelay is how long a lower recommendation must hold before
	// replicas are removed. Default 30s.
	ScaleDownDelay Duration `yaml:"scale_down_delay"`
	// ScaleToZeroAfter: with Min 0, a pool idle this long goes to zero
	// replicas. Default 0s (at once when idle, after ScaleDownDelay).
	ScaleToZeroAfter Duration `yaml:"scale_to_zero_after"`
	// Predictive adds a seasonal forecast to observed demand.
	Predictive Predictive `yaml:"predictive"`
	// Signals chooses what counts as demand besides requests. Default:
	// requests only.
	Signals Signals `yaml:"signals"`
	// SLO adds replicas while the observed time to first token misses its
	// objective. Default off.
	SLO SLO `yaml:"slo"`
	// Actuator drives replicas sluice does not run itself (an AWS Auto
	// Scaling group, Nomad, Docker Compose). Nil: the pool's process or
	// kubernetes block is the actuator.
	Actuator *Actuator `yaml:"actuator"`
}

// Predictive configures the seasonal demand forecast.
type Predictive struct {
	// Enabled turns the forecast on. Default false.
	Enabled bool `yaml:"enabled"`
	// Season is the period demand repeats over. Default 24h.
	Season Duration `yaml:"season"`
	// History is a CSV file of past demand ("unix seconds or RFC 3339
	// time,demand" per line) the forecast is trained on at start, so it
	// forecasts from the first minute instead of after one season. Default
	// none.
	History string `yaml:"history"`
}

// Signals are the LLM-aware parts of demand. Each one that is set can only
// raise demand above the request count (in-flight + waiting requests +
// pending jobs), which always counts.
type Signals struct {
	// ReplicaQueue adds this many units of demand per request waiting
	// inside a replica (vllm:num_requests_waiting from its /metrics): a
	// replica that queues is past its batch size. Default 0 (off).
	ReplicaQueue float64 `yaml:"replica_queue"`
	// KVCache is the KV-cache usage (0 to 1, vllm:kv_cache_usage_perc) one
	// replica should run at; demand is at least the replicas' summed usage
	// / kv_cache × target_concurrency. Default 0 (off).
	KVCache float64 `yaml:"kv_cache"`
	// Tokens is the tokens in flight (prompt + expected output of the
	// requests in flight and waiting) one replica should carry; demand is
	// at least tokens in flight / tokens × target_concurrency. Default 0
	// (off).
	Tokens float64 `yaml:"tokens"`
	// ScrapeInterval is how often the replicas' /metrics are read for
	// replica_queue and kv_cache. Default 5s.
	ScrapeInterval Duration `yaml:"scrape_interval"`
}

// SLO is the latency objective the autoscaler defends.
type SLO struct {
	// TTFT is the objective for the time to first token at Percentile; 0
	// turns the feedback off. Default 0.
	TTFT Duration `yaml:"ttft"`
	// Percentile of the TTFT observed over the panic window that must stay
	// within TTFT, in (0, 1). Default 0.9.
	Percentile float64 `yaml:"percentile"`
	// MaxBoost bounds the feedback: the target concurrency is divided by at
	// most this factor while the objective is missed. Default 4.
	MaxBoost float64 `yaml:"max_boost"`
}

// Actuator runs a command or calls a webhook with the desired replica
// count. Exactly one of Command and Webhook is required.
type Actuator struct {
	// Command is argv, run without a shell; {replicas} and {pool} are
	// replaced in each argument.
	Command []string `yaml:"command"`
	// Webhook is a URL that receives POST {"pool": ..., "replicas": n}.
	Webhook string `yaml:"webhook"`
	// Timeout bounds one run or call. Default 30s.
	Timeout Duration `yaml:"timeout"`
}

// Route sends matching requests to a pool before model routing applies.
type Route struct {
	// Host matches the request host (without port); "" matches any.
	Host string `yaml:"host"`
	// PathPrefix matches the request path. Default "/".
	PathPrefix string `yaml:"path_prefix"`
	// Pool is the target pool's name. Required.
	Pool string `yaml:"pool"`
}

// Auth configures authentication and per-tenant limits.
// At least one of Keys and JWT is required.
type Auth struct {
	// Keys are static API keys, one tenant each. Default none.
	Keys []APIKey `yaml:"keys"`
	// JWT accepts bearer JWTs. Nil (the default) accepts none.
	JWT *JWT `yaml:"jwt"`
}

// APIKey is one tenant's key.
type APIKey struct {
	// Name is the tenant: it labels metrics and logs and owns jobs.
	// Required and unique.
	Name string `yaml:"name"`
	// KeySHA256 is the hex SHA-256 of the key (64 hex digits). Set exactly
	// one of KeySHA256 and Key; Hash gives the digest either way.
	KeySHA256 string `yaml:"key_sha256"`
	// Key is the plain key, best written as ${VAR}. Never log it.
	Key string `yaml:"key"`
	// Models are globs (see MatchModel) this tenant may use. Default ["*"].
	Models []string `yaml:"models"`
	// Limits are this tenant's rate and concurrency limits. Default none.
	Limits TenantLimits `yaml:"limits"`
}

// JWT configures bearer-token verification.
// Exactly one of JWKSURL and JWKSFile is required.
type JWT struct {
	// JWKSURL is fetched (http or https) for the signing keys.
	JWKSURL string `yaml:"jwks_url"`
	// JWKSFile holds the signing keys as a JWKS document.
	JWKSFile string `yaml:"jwks_file"`
	// Issuer, when set, must equal the token's iss claim. Default "" (any).
	Issuer string `yaml:"issuer"`
	// Audience, when set, must be in the token's aud claim. Default "" (any).
	Audience string `yaml:"audience"`
	// TenantClaim names the claim whose value is the tenant. Default sub.
	TenantClaim string `yaml:"tenant_claim"`
	// Models are globs (see MatchModel) JWT tenants may use. Default ["*"].
	Models []string `yaml:"models"`
	// Limits apply to each JWT tenant separately. Default none.
	Limits TenantLimits `yaml:"limits"`
}

// TenantLimits are per-tenant limits; 0 means unlimited.
type TenantLimits struct {
	// RPM is requests per minute. Default 0.
	RPM int `yaml:"rpm"`
	// TPM is prompt plus completion tokens per minute. Default 0.
	TPM int `yaml:"tpm"`
	// Concurrency is requests in flight at once. Default 0.
	Concurrency int `yaml:"concurrency"`
}

// Cache sizes the response cache.
type Cache struct {
	// Memory bounds the in-process L1. Default 256MiB.
	Memory Size `yaml:"memory"`
	// Redis adds redis.url as a shared L2. Default false.
	Redis bool `yaml:"redis"`
	// Memcached adds Memcached as the shared L2 instead of Redis:
	// "host:port", several separated by commas (keys are spread over them
	// by hash). Default "" (none).
	Memcached string `yaml:"memcached"`
	// MemcachedItemLimit is the servers' item size limit (memcached -I);
	// larger responses are kept in memory only. Default 0: 1MiB,
	// memcached's own default.
	MemcachedItemLimit Size `yaml:"memcached_item_limit"`
}

// Jobs configures async jobs.
type Jobs struct {
	// Store is "embedded" (default; durable, in DataDir), "redis" (uses
	// Redis.URL), a NATS URL such as nats://host:4222 (several may be
	// joined with commas), a RabbitMQ URL amqp://user:password@host:5672/vhost
	// (amqps:// for TLS), or kafka://host:9092[,host2:9092]; the RabbitMQ
	// and Kafka stores keep their job records in Redis.URL.
	Store string `yaml:"store"`
	// Concurrency is jobs dispatched at once per gateway. Default 64.
	Concurrency int `yaml:"concurrency"`
	// MaxAttempts per job. Default 3.
	MaxAttempts int `yaml:"max_attempts"`
	// Retention keeps finished jobs this long. Default 24h.
	Retention Duration `yaml:"retention"`
	// WebhookSecret is the key that signs job callbacks (Standard Webhooks);
	// write it as ${VAR}. Default "" (no key).
	WebhookSecret string `yaml:"webhook_secret"`
	// MaxFileSize bounds a file uploaded to /v1/files (a batch's input).
	// Default 200MiB, OpenAI's limit for batch input files.
	MaxFileSize Size `yaml:"max_file_size"`
	// FileRetention keeps a file of /v1/files this long when its upload
	// sets no expires_after (and a batch's output and error files when the
	// batch sets no output_expires_after); expired files are deleted.
	// Default 720h (30 days, OpenAI's default for batch files).
	FileRetention Duration `yaml:"file_retention"`
	// CallbackAllow lists the non-public destinations job callbacks may
	// reach (see ParseAddrRule): "10.0.0.0/8", "10.1.2.3:8443",
	// "hooks.internal:443", "*.hooks.internal". Default none: a callback
	// to a loopback, private, link-local, CGNAT, unspecified, multicast or
	// reserved address, or to the gateway's own listen addresses, is
	// refused (the own addresses even when listed here).
	CallbackAllow []string `yaml:"callback_allow"`
}

// KEDA configures the KEDA external-scaler server.
type KEDA struct {
	// Listen is the gRPC address, e.g. ":9090"; "" (default) disables it.
	Listen string `yaml:"listen"`
}

// Tracing configures OpenTelemetry trace export.
type Tracing struct {
	// OTLPEndpoint receives OTLP traces: a URL such as
	// http://127.0.0.1:4318 (protocol http; the path defaults to
	// /v1/traces) or http://127.0.0.1:4317 (protocol grpc; https:// uses
	// TLS). "" (default) disables tracing at no cost per request.
	OTLPEndpoint string `yaml:"otlp_endpoint"`
	// Protocol is "http" (default, OTLP/HTTP protobuf) or "grpc".
	Protocol string `yaml:"protocol"`
	// SampleRatio is the share of new traces recorded, 0 to 1 (default 1).
	// A request that arrives with a traceparent follows its sampled flag.
	SampleRatio float64 `yaml:"sample_ratio"`
	// Headers are sent with every export, e.g. {Authorization: "Bearer
	// ${OTLP_TOKEN}"}; write secrets as ${VAR}. Never logged. Default none.
	Headers map[string]string `yaml:"headers"`
}

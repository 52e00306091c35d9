package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/sluice-ai/sluice/internal/openai"
)

// cutGrace bounds how long Serve waits for cut requests to answer.
const cutGrace = time.Second

// InstanceHeader names the response header that carries Config.ID.
const InstanceHeader = "X-Sim-Instance"

// Server is one simulated inference server. Its handler may be mounted
// anywhere (httptest included); Serve and ListenAndServe run it on a
// listener with graceful shutdown.
type Server struct {
	cfg     Config
	clock   clockwork.Clock
	log     *slog.Logger
	engine  *Engine
	metrics *metrics
	mux     *http.ServeMux
	started time.Time
	loaded  atomic.Bool
	serving atomic.Bool

	instance atomic.Pointer[instance]
	// ids counts the response ids handed out.
	ids atomic.Uint64

	rngMu sync.Mutex
	rng   *rand.Rand
}

// New returns a server for cfg (see Config for its defaults). The startup
// delay starts counting now.
func New(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("sim config: %w", err)
	}
	s := &Server{
		cfg:   cfg,
		clock: cfg.Clock,
		log:   cfg.Logger,
		engine: NewEngine(Latency{
			TTFT:            cfg.TTFT,
			PrefillPerToken: cfg.PrefillPerToken,
			ITL:             cfg.ITL,
			BatchPenalty:    cfg.BatchPenalty,
			MaxRunning:      cfg.MaxRunning,
			Slowdown:        cfg.Slowdown,
		}, KVCache{
			BlockTokens:   cfg.BlockTokens,
			Blocks:        cfg.KVBlocks,
			PrefixCaching: !cfg.DisablePrefixCache,
		}, cfg.Clock),
		started: cfg.Clock.Now(),
		rng:     rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x5eed5eed5eed5eed)),
	}
	s.loaded.Store(cfg.StartupDelay == 0)
	id := cfg.ID
	if id == "" {
		id = cfg.Addr
	}
	s.setInstance(id)
	s.metrics = newMetrics(cfg.Models[0], s.engine)
	s.mux = s.routes()
	return s, nil
}

// instance is what identifies a server in its responses.
type instance struct {
	// header is the X-Sim-Instance value, shared by every response.
	header []string
	// idPrefix, a hash of the id, keeps response ids of different
	// instances apart.
	idPrefix string
}

func (s *Server) setInstance(id string) {
	h := newHasher()
	h.string(id)
	s.instance.Store(&instance{
		header:   []string{id},
		idPrefix: strconv.FormatUint(h.sum()&0xffffffff, 16) + "-",
	})
}

// ID is the instance id sent in X-Sim-Instance.
func (s *Server) ID() string { return s.instance.Load().header[0] }

// Engine is the server's latency engine, for tests that watch its batch.
func (s *Server) Engine() *Engine { return s.engine }

// Handler serves every endpoint of the sim.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header()[InstanceHeader] = s.instance.Load().header
	s.mux.ServeHTTP(w, r)
}

// ListenAndServe listens on Config.Addr and serves until ctx ends; see Serve.
func (s *Server) ListenAndServe(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", s.cfg.Addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve answers HTTP/1.1 and cleartext HTTP/2 on ln until ctx ends, then
// stops accepting, lets in-flight requests run for up to
// Config.ShutdownTimeout, cancels those still running, and returns nil once
// every handler has returned. It closes ln. A Server serves at most once.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if !s.serving.CompareAndSwap(false, true) {
		ln.Close()
		return errAlreadyServing
	}
	if s.cfg.ID == "" {
		s.setInstance(ln.Addr().String())
	}

	// Request contexts descend from reqCtx, so cancelling it cuts every
	// in-flight request at the end of the shutdown grace period.
	reqCtx, cutRequests := context.WithCancel(context.WithoutCancel(ctx))
	defer cutRequests()
	var inflight tracker
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !inflight.enter() {
				w.Header()[InstanceHeader] = s.instance.Load().header
				openai.Unavailable("shutting_down", "the server is shutting down; another replica can serve", time.Second).Write(w)
				return
			}
			defer inflight.leave()
			s.serveHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return reqCtx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		Protocols:         &protocols,
	}

	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	s.log.Info("sim listening", "addr", ln.Addr().String(), "models", s.cfg.Models, "id", s.ID())

	select {
	case err := <-served:
		cutRequests()
		hs.Close()
		inflight.closeAndWait()
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(shutdownCtx); err != nil {
		// The grace period is over: cut the requests still running. They
		// answer at once, so give those answers a moment to be written
		// before the connections close.
		cutRequests()
		cutCtx, cancelCut := context.WithTimeout(context.WithoutCancel(ctx), cutGrace)
		_ = hs.Shutdown(cutCtx)
		cancelCut()
		hs.Close()
	}
	<-served
	inflight.closeAndWait()
	s.log.Info("sim stopped", "addr", ln.Addr().String())
	return nil
}

// tracker counts running handlers so that Serve can wait for the last one;
// once closed it admits no more.
type tracker struct {
	mu     sync.Mutex
	n      int
	closed bool
	idle   chan struct{}
}

func (t *tracker) enter() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.n++
	return true
}

func (t *tracker) leave() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n--
	if t.n == 0 && t.idle != nil {
		close(t.idle)
		t.idle = nil
	}
}

// closeAndWait refuses new handlers and waits for the running ones.
func (t *tracker) closeAndWait() {
	t.mu.Lock()
	t.closed = true
	if t.n == 0 {
		t.mu.Unlock()
		return
	}
	idle := make(chan struct{})
	t.idle = idle
	t.mu.Unlock()
	<-idle
}

// ready reports whether the startup delay has passed, and if not how much
// of it is left.
func (s *Server) ready() (bool, time.Duration) {
	if s.loaded.Load() {
		return true, 0
	}
	left := s.cfg.StartupDelay - s.clock.Since(s.started)
	if left <= 0 {
		s.loaded.Store(true)
		return true, 0
	}
	return false, left
}

// model returns the served name equal to name; an empty name means the
// first one, as vLLM does.
func (s *Server) model(name string) (string, bool) {
	if name == "" {
		return s.cfg.Models[0], true
	}
	for _, m := range s.cfg.Models {
		if m == name {
			return m, true
		}
	}
	return "", false
}

// fail draws whether this request gets a simulated error.
func (s *Server) fail() bool {
	if s.cfg.ErrorRate <= 0 {
		return false
	}
	s.rngMu.Lock()
	x := s.rng.Float64()
	s.rngMu.Unlock()
	return x < s.cfg.ErrorRate
}

// newID returns a response id unique within this process.
func (s *Server) newID(prefix string) string {
	n := s.ids.Add(1)
	var b [64]byte
	out := append(b[:0], prefix...)
	out = append(out, s.instance.Load().idPrefix...)
	out = strconv.AppendUint(out, n, 16)
	return string(out)
}

// errAlreadyServing is returned by a second call to Serve.
var errAlreadyServing = errors.New("sim: server already serving")

// errBodyTooLarge is returned by readBody for a body over MaxBodyBytes.
var errBodyTooLarge = errors.New("request body too large")

// readBody reads r's body into buf, up to Config.MaxBodyBytes.
func (s *Server) readBody(r *http.Request, buf []byte) ([]byte, error) {
	limit := s.cfg.MaxBodyBytes
	if r.ContentLength > limit {
		return buf, errBodyTooLarge
	}
	// Room for the whole body and the read that sees EOF.
	if want := r.ContentLength + 512; r.ContentLength > 0 && int64(cap(buf)) < want {
		buf = make([]byte, 0, want)
	}
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > limit {
			return buf, errBodyTooLarge
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, fmt.Errorf("read request body: %w", err)
		}
	}
}

// errSimulated answers the requests that Config.ErrorRate picks.
var errSimulated = &openai.Error{
	Status:  http.StatusInternalServerError,
	Message: "simulated server error (--error-rate)",
	Type:    "server_error",
	Code:    "simulated_error",
}

func loadingError(left time.Duration) *openai.Error {
	return openai.Unavailable("model_loading", "the model is still loading (--startup-delay)", left)
}

func unknownModel(name string) *openai.Error {
	return openai.NotFound("model_not_found", fmt.Sprintf("the model %q does not exist on this server", name))
}

func bodyError(err error) *openai.Error {
	if errors.Is(err, errBodyTooLarge) {
		return openai.TooLarge("request body too large")
	}
	return openai.BadRequest(err.Error())
}

package autoscale

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sluice-ai/sluice/internal/config"
)

// maxActuatorOutput bounds the output of a command or the body of a webhook
// answer that is kept for the log.
const maxActuatorOutput = 4 << 10

// ExternalOptions are the parts of an ExternalActuator that come from its
// owner.
type ExternalOptions struct {
	// Initial is the replica count assumed before the first Scale (sluice
	// cannot ask an arbitrary platform). The gateway passes autoscale.min.
	Initial int
	// Client sends webhook calls. Default: http.DefaultClient's transport
	// with no redirects followed.
	Client *http.Client
	// Logger receives each run or call with its outcome. Nil discards.
	Logger *slog.Logger
}

// ExternalActuator drives replicas sluice does not run itself: it runs
// autoscale.actuator.command with {replicas} and {pool} replaced (directly,
// no shell), or POSTs {"pool": ..., "replicas": n} to
// autoscale.actuator.webhook. A run that exits non-zero, a call that does not
// answer 2xx, or either outlasting the timeout is an error: the count is not
// recorded and the controller tries again at its next tick.
type ExternalActuator struct {
	pool string
	cfg  config.Actuator
	opts ExternalOptions

	mu      sync.Mutex
	desired int
	runs    int
}

var _ Actuator = (*ExternalActuator)(nil)

// NewExternalActuator returns an actuator for pool by cfg.
func NewExternalActuator(pool string, cfg config.Actuator, opts ExternalOptions) (*ExternalActuator, error) {
	if len(cfg.Command) == 0 && cfg.Webhook == "" {
		return nil, errors.New("autoscale: actuator needs a command or a webhook")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = config.DefaultActuator().Timeout
	}
	if opts.Client == nil {
		opts.Client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &ExternalActuator{pool: pool, cfg: cfg, opts: opts, desired: max(opts.Initial, 0)}, nil
}

// Desired is the last count the platform accepted (Initial before any).
func (a *ExternalActuator) Desired() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.desired
}

// Scale tells the platform to run n replicas and waits for its answer,
// for at most the actuator's timeout.
func (a *ExternalActuator) Scale(ctx context.Context, n int) error {
	if n < 0 {
		return fmt.Errorf("pool %s: scale to %d replicas: negative", a.pool, n)
	}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout.D())
	defer cancel()
	start := time.Now()
	var out string
	var err error
	if len(a.cfg.Command) > 0 {
		out, err = a.run(ctx, n)
	} else {
		out, err = a.call(ctx, n)
	}
	took := time.Since(start).Round(time.Millisecond)
	if err != nil {
		a.opts.Logger.Warn("autoscale actuator failed", "pool", a.pool, "replicas", n, "took", took, "err", err, "output", out)
		return fmt.Errorf("pool %s: scale to %d: %w", a.pool, n, err)
	}
	a.opts.Logger.Info("autoscale actuator", "pool", a.pool, "replicas", n, "took", took, "output", out)
	a.mu.Lock()
	a.desired = n
	a.runs++
	a.mu.Unlock()
	return nil
}

// run executes the command in its own process group, killed with the group
// when ctx ends, and returns its combined output.
func (a *ExternalActuator) run(ctx context.Context, n int) (string, error) {
	r := strings.NewReplacer("{replicas}", strconv.Itoa(n), "{pool}", a.pool)
	argv := make([]string, len(a.cfg.Command))
	for i, arg := range a.cfg.Command {
		argv[i] = r.Replace(arg)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	out := &limitedBuffer{max: maxActuatorOutput}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%s: no exit within %s: %w", argv[0], a.cfg.Timeout.D(), err)
	} else if err != nil {
		err = fmt.Errorf("%s: %w", argv[0], err)
	}
	return strings.TrimSpace(out.String()), err
}

// call POSTs the count to the webhook.
func (a *ExternalActuator) call(ctx context.Context, n int) (string, error) {
	body, _ := json.Marshal(struct {
		Pool     string `json:"pool"`
		Replicas int    `json:"replicas"`
	}{a.pool, n})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.cfg.Webhook, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "sluice-autoscaler")
	resp, err := a.opts.Client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxActuatorOutput))
	out := strings.TrimSpace(string(b))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return out, fmt.Errorf("webhook answered %s", resp.Status)
	}
	return out, nil
}

// limitedBuffer keeps the first max bytes written and counts the rest.
type limitedBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	max     int
	dropped int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(p)
	if room := max(l.max-l.b.Len(), 0); room < n {
		l.dropped += n - room
		p = p[:room]
	}
	l.b.Write(p)
	return n, nil
}

func (l *limitedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dropped > 0 {
		return l.b.String() + fmt.Sprintf(" …(%d more bytes)", l.dropped)
	}
	return l.b.String()
}

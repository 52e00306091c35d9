package jobs

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// Standard Webhooks (https://www.standardwebhooks.com) headers.
const (
	headerWebhookID        = "Webhook-Id"
	headerWebhookTimestamp = "Webhook-Timestamp"
	headerWebhookSignature = "Webhook-Signature"
)

// secretPrefix marks a base64 secret, as the Standard Webhooks spec writes
// them.
const secretPrefix = "whsec_"

// ParseWebhookSecret returns the HMAC key of a webhook secret: the decoded
// bytes of "whsec_<base64>", or the bytes of any other string as is.
func ParseWebhookSecret(s string) ([]byte, error) {
	if s == "" {
		return nil, errors.New("webhook secret is empty")
	}
	if b64, ok := strings.CutPrefix(s, secretPrefix); ok {
		key, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return nil, fmt.Errorf("webhook secret: %s followed by invalid base64: %w", secretPrefix, err)
		}
		if len(key) == 0 {
			return nil, errors.New("webhook secret: empty key after " + secretPrefix)
		}
		return key, nil
	}
	return []byte(s), nil
}

// SignWebhook returns the webhook-signature header value for a message:
// "v1," and the base64 HMAC-SHA256 under key of "id.timestamp.body".
func SignWebhook(key []byte, id string, timestamp int64, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write(strconv.AppendInt(nil, timestamp, 10))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// callbackPayload is the body of a callback: the Standard Webhooks envelope
// around the job as GET /v1/jobs/{id} returns it.
type callbackPayload struct {
	Type      string    `json:"type"`
	Timestamp apiTime   `json:"timestamp"`
	Data      jobDetail `json:"data"`
}

// postCallback sends job's callback once and reports whether the receiver
// accepted it (2xx).
func (s *Service) postCallback(ctx context.Context, job *Job) error {
	now := s.clock.Now()
	body, err := json.Marshal(callbackPayload{
		Type:      "job." + string(job.Status),
		Timestamp: apiTime(now),
		Data:      detailOf(job),
	})
	if err != nil {
		return fmt.Errorf("encode callback: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, job.CallbackURL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("callback request: %w", err)
	}
	ts := now.Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "sluice-webhooks")
	req.Header.Set(headerWebhookID, job.ID)
	req.Header.Set(headerWebhookTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(headerWebhookSignature, SignWebhook(s.webhookKey, job.ID, ts, body))
	resp, err := s.opt.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("post callback: %w", err)
	}
	// Read a little so the connection can be reused, then let it go.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("callback receiver answered %d", resp.StatusCode)
	}
	return nil
}

// queueCallback hands a finished job's delivery to the callback senders.
// The delivery stays leased (and its job retained on the queue) until the
// callback is delivered or given up, so a crash re-sends it. When the
// senders are saturated the delivery goes back to the queue for later:
// dispatch never waits for callbacks.
func (s *Service) queueCallback(ctx context.Context, d *Delivery) {
	select {
	case s.callbacks <- d:
	default:
		s.requeue(ctx, d, s.opt.CallbackBackoff)
	}
}

// callbackWorker sends queued callbacks until ctx ends. An interrupted send
// is handed back to the queue without counting as an attempt.
func (s *Service) callbackWorker(ctx, opsCtx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case d := <-s.callbacks:
			s.deliverCallback(ctx, opsCtx, d)
		}
	}
}

func (s *Service) deliverCallback(ctx, opsCtx context.Context, d *Delivery) {
	job := d.Job
	err := s.postCallback(ctx, job)
	if err == nil {
		s.metrics.webhooks.WithLabelValues("delivered").Inc()
		s.ack(opsCtx, d)
		return
	}
	if ctx.Err() != nil {
		s.requeue(opsCtx, d, 0)
		return
	}
	// A destination the policy refuses stays refused: give up at once
	// rather than knock on it CallbackAttempts times.
	refused := errors.Is(err, ErrCallbackRefused)
	for {
		job.CallbackAttempts++
		if refused {
			job.CallbackAttempts = max(job.CallbackAttempts, s.opt.CallbackAttempts)
		}
		uerr := s.store.Update(opsCtx, job)
		if errors.Is(uerr, ErrConflict) {
			cur, gerr := s.store.Get(opsCtx, job.Tenant, job.ID)
			if gerr != nil || !cur.callbackPending(s.opt.CallbackAttempts) {
				s.ack(opsCtx, d)
				return
			}
			job = cur
			d.Job = cur
			continue
		}
		if uerr != nil {
			s.log.Warn("record callback attempt", "job", job.ID, "err", uerr)
			s.drop(d)
			return
		}
		break
	}
	if job.CallbackAttempts >= s.opt.CallbackAttempts {
		s.metrics.webhooks.WithLabelValues("failed").Inc()
		s.log.Warn("callback given up", "job", job.ID, "tenant", job.Tenant, "url", job.CallbackURL, "attempts", job.CallbackAttempts, "refused", refused, "err", err)
		s.ack(opsCtx, d)
		return
	}
	s.metrics.webhooks.WithLabelValues("retried").Inc()
	s.log.Info("callback failed, will retry", "job", job.ID, "attempt", job.CallbackAttempts, "err", err)
	s.requeue(opsCtx, d, backoff(s.opt.CallbackBackoff, maxCallbackBackoff, job.CallbackAttempts))
}

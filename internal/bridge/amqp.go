package bridge

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// AMQP is a RabbitMQ source of requests.
type AMQP struct {
	// URL of the broker, amqp://user:password@host:5672/vhost (amqps://
	// for TLS). Required.
	URL string
	// Queue the requests arrive on; declared (durable, quorum) if missing.
	// Required.
	Queue string
	// DeadLetter is the queue failed requests are copied to, with the error
	// in their headers; declared (durable, quorum) if missing. Required.
	DeadLetter string
}

// RunAMQP consumes requests from cfg.Queue, runs each through the gateway
// and publishes the answer to its reply_to, until ctx ends; then it waits
// for nothing: requests in flight are cancelled and, unacknowledged,
// return to the queue. A lost connection is re-established with backoff.
func RunAMQP(ctx context.Context, cfg AMQP, o Options) error {
	if err := o.defaults(); err != nil {
		return err
	}
	if cfg.URL == "" || cfg.Queue == "" || cfg.DeadLetter == "" {
		return errors.New("bridge: amqp needs url, queue and dead_letter")
	}
	for wait := 250 * time.Millisecond; ; wait = min(2*wait, 10*time.Second) {
		err := consumeAMQP(ctx, cfg, &o)
		if ctx.Err() != nil {
			return nil
		}
		o.Logger.Warn("amqp bridge: reconnecting", "queue", cfg.Queue, "in", wait, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// declare makes sure queue exists, on a channel of its own: declaring a
// queue that exists with other arguments closes the channel it ran on,
// and such a queue is fine as it is.
func declare(conn *amqp.Connection, queue string) error {
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	if _, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil); err == nil {
		return nil
	}
	ch2, err := conn.Channel()
	if err != nil {
		return err
	}
	defer ch2.Close()
	_, err = ch2.QueueDeclare(queue, true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
	return err
}

func consumeAMQP(ctx context.Context, cfg AMQP, o *Options) error {
	conn, err := amqp.DialConfig(cfg.URL, amqp.Config{
		Heartbeat: 10 * time.Second, Locale: "en_US",
		Properties: amqp.Table{"connection_name": "sluice-bridge-" + o.Pool},
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	for _, q := range []string{cfg.Queue, cfg.DeadLetter} {
		if err := declare(conn, q); err != nil {
			return fmt.Errorf("declare queue %s: %w", q, err)
		}
	}
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	if err := ch.Confirm(false); err != nil {
		return err
	}
	if err := ch.Qos(o.Concurrency, 0, false); err != nil {
		return err
	}
	ds, err := ch.Consume(cfg.Queue, "", false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume %s: %w", cfg.Queue, err)
	}
	o.Logger.Info("amqp bridge consuming", "queue", cfg.Queue, "pool", o.Pool)
	var wg sync.WaitGroup
	// In-flight requests end (cancelled) before the connection closes, so
	// none acks on a closed channel.
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return nil
		case d, ok := <-ds:
			if !ok {
				return errors.New("delivery channel closed")
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				handleAMQP(ctx, ch, cfg, o, d)
			}()
		}
	}
}

// publish sends msg and waits for its confirm.
func publish(ctx context.Context, ch *amqp.Channel, queue string, msg amqp.Publishing) error {
	dc, err := ch.PublishWithDeferredConfirm("", queue, false, false, msg)
	if err != nil {
		return err
	}
	ok, err := dc.WaitContext(ctx)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("RabbitMQ refused the message to %s", queue)
	}
	return nil
}

func handleAMQP(ctx context.Context, ch *amqp.Channel, cfg AMQP, o *Options, d amqp.Delivery) {
	var res result
	if d.ReplyTo == "" {
		res = result{err: "the message has no reply_to: its answer would have nowhere to go"}
	} else {
		path, _ := d.Headers[HeaderPath].(string)
		res = run(ctx, o, d.Body, path)
	}
	if res.aborted {
		return // back to the queue when the connection closes
	}
	if d.ReplyTo != "" {
		h := amqp.Table{HeaderStatus: int32(res.answerStatus())}
		if res.err != "" {
			h[HeaderError] = res.err
		}
		err := publish(ctx, ch, d.ReplyTo, amqp.Publishing{
			ContentType: res.contentType(), CorrelationId: d.CorrelationId, MessageId: d.MessageId,
			DeliveryMode: d.DeliveryMode, Timestamp: time.Now(), Headers: h, Body: res.answerBody(),
		})
		if err != nil {
			o.Logger.Warn("amqp bridge: publish answer", "reply_to", d.ReplyTo, "err", err)
			_ = d.Nack(false, true)
			return
		}
	}
	if res.err != "" {
		h := amqp.Table{}
		for k, v := range d.Headers {
			h[k] = v
		}
		h[HeaderError] = res.err
		h[HeaderAttempts] = int32(res.attempts)
		if res.status != 0 {
			h[HeaderStatus] = int32(res.status)
		}
		err := publish(ctx, ch, cfg.DeadLetter, amqp.Publishing{
			ContentType: d.ContentType, CorrelationId: d.CorrelationId, ReplyTo: d.ReplyTo, MessageId: d.MessageId,
			DeliveryMode: amqp.Persistent, Timestamp: time.Now(), Headers: h, Body: d.Body,
		})
		if err != nil {
			o.Logger.Warn("amqp bridge: dead-letter", "queue", cfg.DeadLetter, "err", err)
			_ = d.Nack(false, true)
			return
		}
		o.Logger.Info("amqp bridge: request dead-lettered", "queue", cfg.DeadLetter, "correlation_id", d.CorrelationId,
			"error", res.err, "attempts", strconv.Itoa(res.attempts))
	}
	if err := d.Ack(false); err != nil {
		o.Logger.Warn("amqp bridge: ack", "err", err)
	}
}

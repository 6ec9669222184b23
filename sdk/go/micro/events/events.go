// Package events is Micro v3's events.Stream and events.Store over Strata's streams. Micro's
// topic T is Strata's topic T in namespace "micro" (the same data Strata's Micro events API
// serves), created on first use; an event's ID is its sequence in the topic. Consumers in a
// group share the topic's messages and resume from the group's acked position; an unacked
// message comes again after the ack wait, a nacked one at once, and one delivered more than
// the retry limit allows is dropped.
package events

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/micro/micro/v3/service/events"
	"github.com/strata-db/strata/sdk/go/strata"
)

const (
	// Namespace is where Micro's events live in Strata.
	Namespace = "micro"
	// callTimeout bounds each call: Micro's interface takes no context.
	callTimeout = 30 * time.Second
	// defaultReadLimit is what events.Store's Read returns when the caller sets no limit.
	defaultReadLimit = 250
	// maxDeliveries is Strata's most deliveries of one message.
	maxDeliveries = 1_000
)

// Stream is events.Stream and events.Store over one client.
type Stream struct {
	client *strata.Client
}

// NewStream is Micro's event stream over client (whose token must be an admin of the
// namespace "micro").
func NewStream(client *strata.Client) *Stream {
	return &Stream{client: client.InNamespace(Namespace)}
}

// NewStore is Micro's event store: the same topics, read by offset.
func NewStore(client *strata.Client) *Stream { return NewStream(client) }

var (
	_ events.Stream = (*Stream)(nil)
	_ events.Store  = (*Stream)(nil)
)

// Publish appends msg (JSON-encoded unless it is []byte) to topic once a majority has it.
// Strata stamps the time of commit: WithTimestamp is not stored.
func (s *Stream) Publish(topic string, msg interface{}, opts ...events.PublishOption) error {
	if topic == "" {
		return events.ErrMissingTopic
	}
	var o events.PublishOptions
	for _, opt := range opts {
		opt(&o)
	}
	payload, ok := msg.([]byte)
	if !ok {
		encoded, err := json.Marshal(msg)
		if err != nil {
			return events.ErrEncodingMessage
		}
		payload = encoded
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	_, err := s.client.Topic(topic).Publish(ctx, strata.Message{Payload: payload, Metadata: o.Metadata})
	return err
}

// Consume delivers topic's events on the channel until options' context ends or the
// subscription fails; the channel is closed then.
func (s *Stream) Consume(topic string, opts ...events.ConsumeOption) (<-chan events.Event, error) {
	if topic == "" {
		return nil, events.ErrMissingTopic
	}
	o := events.ConsumeOptions{AutoAck: true, Context: context.Background()}
	for _, opt := range opts {
		opt(&o)
	}
	subscribe, err := subscribeOptions(o)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(o.Context, callTimeout)
	defer cancel()
	t := s.client.Topic(topic)
	sub, err := t.Subscribe(ctx, subscribe)
	if errors.Is(err, strata.ErrNotFound) {
		// Micro's topics exist once used: make it, then consume.
		if _, err = t.Create(ctx, nil); err == nil || errors.Is(err, strata.ErrAlreadyExists) {
			sub, err = t.Subscribe(ctx, subscribe)
		}
	}
	if err != nil {
		return nil, err
	}
	out := make(chan events.Event)
	go func() {
		defer close(out)
		defer sub.Close()
		for {
			d, err := sub.Next(o.Context)
			if err != nil {
				return
			}
			event := toEvent(d.Message)
			if !o.AutoAck {
				event.SetAckFunc(func() error { return settle(d, true) })
				event.SetNackFunc(func() error { return settle(d, false) })
			}
			select {
			case out <- *event:
			case <-o.Context.Done():
				return
			}
		}
	}()
	return out, nil
}

// subscribeOptions is Strata's subscription for Micro's options: a start time, else new
// events only; Micro's retry limit counts redeliveries, Strata counts deliveries.
func subscribeOptions(o events.ConsumeOptions) (strata.SubscribeOptions, error) {
	out := strata.SubscribeOptions{Group: o.Group, Start: strata.Latest(), AutoAck: o.AutoAck, AckWait: o.AckWait}
	if !o.Offset.IsZero() && o.Offset.Unix() > 0 {
		out.Start = strata.AtTime(o.Offset)
	}
	if limit := o.GetRetryLimit(); limit >= 0 {
		if limit+1 > maxDeliveries {
			return out, errors.New("events: a retry limit is at most " + strconv.Itoa(maxDeliveries-1))
		}
		out.MaxDeliveries = uint32(limit + 1)
	}
	return out, nil
}

func settle(d *strata.Delivery, ack bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if ack {
		return d.Ack(ctx)
	}
	return d.Nack(ctx, 0)
}

func toEvent(m interface {
	GetTopic() string
	GetSequence() uint64
	GetTimestampMs() uint64
	GetMetadata() map[string]string
	GetPayload() []byte
}) *events.Event {
	return &events.Event{
		ID:        strconv.FormatUint(m.GetSequence(), 10),
		Topic:     m.GetTopic(),
		Timestamp: time.UnixMilli(int64(m.GetTimestampMs())),
		Metadata:  m.GetMetadata(),
		Payload:   m.GetPayload(),
	}
}

// Read returns up to Limit (default 250) of topic's retained events, oldest first, from the
// Offset-th on; none for a topic that does not exist.
func (s *Stream) Read(topic string, opts ...events.ReadOption) ([]*events.Event, error) {
	if topic == "" {
		return nil, events.ErrMissingTopic
	}
	o := events.ReadOptions{Limit: defaultReadLimit}
	for _, opt := range opts {
		opt(&o)
	}
	if o.Limit == 0 {
		o.Limit = defaultReadLimit
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	t := s.client.Topic(topic)
	info, err := t.Info(ctx)
	if errors.Is(err, strata.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	from := max(info.GetTopic().GetFirstSequence(), 1) + uint64(o.Offset)
	var out []*events.Event
	for uint(len(out)) < o.Limit {
		page, err := t.Read(ctx, strata.AtSequence(from), uint32(min(o.Limit-uint(len(out)), 1_000)))
		if err != nil {
			return nil, err
		}
		for _, m := range page.GetMessages() {
			out = append(out, toEvent(m))
			from = m.GetSequence() + 1
		}
		if len(page.GetMessages()) == 0 {
			break
		}
	}
	return out, nil
}

// Write appends event to its topic, with its ID as the message id: a repeat of the same
// event within the topic's dedup window is stored once. The TTL option is not per event in
// Strata (a topic's retention bounds it).
func (s *Stream) Write(event *events.Event, opts ...events.WriteOption) error {
	if event == nil || event.Topic == "" {
		return events.ErrMissingTopic
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	_, err := s.client.Topic(event.Topic).Publish(ctx, strata.Message{Payload: event.Payload, Metadata: event.Metadata, ID: event.ID})
	return err
}

// Package broker is Micro v3's broker.Broker over Strata's streams, so that a publish on one
// node reaches subscribers on every node: topic T is Strata's topic T in the client's
// namespace (the same data Strata's Micro broker API serves), keeping its messages one
// minute. Delivery is at most once, as Micro's broker: subscriptions start at the newest
// message and ack on hand-off; a Queue is a consumer group whose members share the messages.
package broker

import (
	"context"
	"strings"
	"sync"

	"github.com/micro/micro/v3/service/broker"
	"github.com/strata-db/strata/sdk/go/internal/microkit"
	"github.com/strata-db/strata/sdk/go/strata"
)

type strataBroker struct {
	kit    *microkit.Broker
	client *strata.Client
	mu     sync.Mutex
	opts   broker.Options
}

// NewBroker is a Micro broker over client.
func NewBroker(client *strata.Client, opts ...broker.Option) broker.Broker {
	b := &strataBroker{kit: microkit.NewBroker(client), client: client, opts: broker.Options{Context: context.Background()}}
	for _, o := range opts {
		o(&b.opts)
	}
	return b
}

func (b *strataBroker) Init(opts ...broker.Option) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, o := range opts {
		o(&b.opts)
	}
	return nil
}

func (b *strataBroker) Options() broker.Options {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.opts
}

func (b *strataBroker) Address() string { return strings.Join(b.client.Endpoints(), ",") }
func (b *strataBroker) Connect() error  { return nil }
func (b *strataBroker) String() string  { return "strata" }

// Disconnect ends every subscription made here.
func (b *strataBroker) Disconnect() error {
	b.kit.Disconnect()
	return nil
}

func (b *strataBroker) Publish(topic string, m *broker.Message, opts ...broker.PublishOption) error {
	if m == nil {
		m = &broker.Message{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), microkit.CallTimeout)
	defer cancel()
	return b.kit.Publish(ctx, topic, m.Header, m.Body)
}

// Subscribe calls h for each message (not from inside h: Unsubscribe waits for it).
func (b *strataBroker) Subscribe(topic string, h broker.Handler, opts ...broker.SubscribeOption) (broker.Subscriber, error) {
	o := broker.NewSubscribeOptions(opts...)
	ctx, cancel := context.WithTimeout(context.Background(), microkit.CallTimeout)
	defer cancel()
	s, err := b.kit.Subscribe(ctx, topic, o.Queue, true, func(d microkit.Delivery) {
		m := &broker.Message{Header: d.Header, Body: d.Body}
		if err := h(m); err != nil && o.ErrorHandler != nil {
			o.ErrorHandler(m, err)
		}
	})
	if err != nil {
		return nil, err
	}
	return &subscriber{Subscriber: s, topic: topic, opts: o}, nil
}

type subscriber struct {
	*microkit.Subscriber
	topic string
	opts  broker.SubscribeOptions
}

func (s *subscriber) Options() broker.SubscribeOptions { return s.opts }
func (s *subscriber) Topic() string                    { return s.topic }
func (s *subscriber) Unsubscribe() error {
	s.Stop()
	return nil
}

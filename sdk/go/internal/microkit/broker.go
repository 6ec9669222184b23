package microkit

import (
	"context"
	"errors"
	"sync"
	"time"

	streampb "github.com/strata-db/strata/sdk/go/gen/strata/stream/v1"
	"github.com/strata-db/strata/sdk/go/strata"
)

// BrokerRetention is how long a broker topic made here keeps its messages: enough for a
// subscriber's reconnect, not a log.
const BrokerRetention = time.Minute

// Broker is Micro's broker over Strata's streams, so that a publish on one node reaches
// subscribers on every node: topic T is Strata's topic T in the client's namespace, kept a
// minute. Subscriptions start at the newest message; a queue is a consumer group whose
// members share the messages.
type Broker struct {
	client *strata.Client
	mu     sync.Mutex
	topics map[string]bool
	subs   map[*Subscriber]bool
}

// NewBroker is a broker over client.
func NewBroker(client *strata.Client) *Broker {
	return &Broker{client: client, topics: map[string]bool{}, subs: map[*Subscriber]bool{}}
}

// topic makes the topic with the broker's retention the first time this broker uses it.
func (b *Broker) topic(ctx context.Context, name string) (*strata.Topic, error) {
	t := b.client.Topic(name)
	b.mu.Lock()
	known := b.topics[name]
	b.mu.Unlock()
	if known {
		return t, nil
	}
	_, err := t.Create(ctx, &streampb.Retention{MaxAgeMs: uint64(BrokerRetention.Milliseconds()), DedupWindowMs: new(uint64)})
	if err != nil && !errors.Is(err, strata.ErrAlreadyExists) {
		return nil, err
	}
	b.mu.Lock()
	b.topics[name] = true
	b.mu.Unlock()
	return t, nil
}

// Publish appends one message once a majority has it.
func (b *Broker) Publish(ctx context.Context, topic string, header map[string]string, body []byte) error {
	if topic == "" {
		return errors.New("broker: a publish needs a topic")
	}
	t, err := b.topic(ctx, topic)
	if err != nil {
		return err
	}
	_, err = t.Publish(ctx, strata.Message{Payload: body, Metadata: header})
	return err
}

// Delivery is one message to a handler; Ack settles it (a no-op under auto-ack).
type Delivery struct {
	Topic  string
	Header map[string]string
	Body   []byte
	Ack    func() error
}

// Subscribe calls handle for each message of topic until the subscriber is stopped. With
// autoAck messages are settled as they are sent (at most once, as Micro v3's broker);
// otherwise each waits for its Ack and comes again after the ack wait (at least once).
func (b *Broker) Subscribe(ctx context.Context, topic, queue string, autoAck bool, handle func(Delivery)) (*Subscriber, error) {
	if topic == "" || handle == nil {
		return nil, errors.New("broker: a subscription needs a topic and a handler")
	}
	t, err := b.topic(ctx, topic)
	if err != nil {
		return nil, err
	}
	sub, err := t.Subscribe(ctx, strata.SubscribeOptions{Group: queue, Start: strata.Latest(), AutoAck: autoAck})
	if err != nil {
		return nil, err
	}
	life, stop := context.WithCancel(context.Background())
	s := &Subscriber{sub: sub, stop: stop, done: make(chan struct{}), broker: b}
	b.mu.Lock()
	b.subs[s] = true
	b.mu.Unlock()
	go func() {
		defer close(s.done)
		for {
			d, err := sub.Next(life)
			if err != nil {
				return
			}
			header := d.GetMetadata()
			if header == nil {
				header = map[string]string{}
			}
			ack := func() error { return nil }
			if !autoAck {
				ack = func() error {
					ctx, cancel := context.WithTimeout(context.Background(), CallTimeout)
					defer cancel()
					return d.Ack(ctx)
				}
			}
			handle(Delivery{Topic: topic, Header: header, Body: d.GetPayload(), Ack: ack})
		}
	}()
	return s, nil
}

// Disconnect stops every subscriber of this broker.
func (b *Broker) Disconnect() {
	b.mu.Lock()
	subs := make([]*Subscriber, 0, len(b.subs))
	for s := range b.subs {
		subs = append(subs, s)
	}
	b.mu.Unlock()
	for _, s := range subs {
		s.Stop()
	}
}

// Subscriber is one running subscription.
type Subscriber struct {
	sub    *strata.Subscription
	stop   context.CancelFunc
	done   chan struct{}
	broker *Broker
	once   sync.Once
}

// Stop ends the subscription and waits for its handler to return.
func (s *Subscriber) Stop() {
	s.once.Do(func() {
		s.stop()
		_ = s.sub.Close()
		<-s.done
		s.broker.mu.Lock()
		delete(s.broker.subs, s)
		s.broker.mu.Unlock()
	})
}

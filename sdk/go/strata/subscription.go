package strata

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	streampb "github.com/strata-db/strata/sdk/go/gen/strata/stream/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// SubscribeOptions say how a subscription consumes. A Group shares the work (each message
// goes to one member) and keeps its position on the server across restarts; without one the
// subscription is ephemeral and gets every message.
type SubscribeOptions struct {
	Group string
	// Start applies when the group is new (an existing group resumes where it was); zero:
	// the server's default (new messages only).
	Start Start
	// AutoAck settles each message as it is sent: at-most-once.
	AutoAck bool
	// AckWait: a message not acked within it is sent again (0: 30 s).
	AckWait time.Duration
	// MaxDeliveries: after this many deliveries a message goes to DeadLetterTopic, or is
	// dropped (0: unlimited).
	MaxDeliveries   uint32
	MaxInFlight     uint32
	DeadLetterTopic string
	// Limit ends the subscription after this many deliveries (0: never).
	Limit uint64
	// Heartbeat is how often an idle server says it is alive (0: 5 s); three missed and the
	// stream is taken as broken and opened again elsewhere.
	Heartbeat time.Duration
	// ResubscribeFor is how long a broken subscription keeps trying to open its stream again
	// (0: one minute; negative: not at all).
	ResubscribeFor time.Duration
}

const (
	defaultHeartbeat      = 5 * time.Second
	silentHeartbeats      = 3
	defaultResubscribeFor = time.Minute
	// DefaultSettleTimeout is how long Ack and Nack wait for the server's confirmation when
	// the client has no request timeout; past it the outcome is unknown.
	DefaultSettleTimeout = 30 * time.Second
	// maxBacklog is how many received messages the caller may leave untaken before the
	// subscription ends with ErrConsumerTooSlow rather than buffer without bound.
	maxBacklog = 100_000
)

// Delivery is one message given to a subscriber, with its settlement.
type Delivery struct {
	*streampb.Message
	sub *Subscription
}

// Ack settles the delivery and waits for the server to confirm it (ErrOutcomeUnknown when the
// stream broke first: the message may come again).
func (d *Delivery) Ack(ctx context.Context) error { return d.sub.settle(ctx, d.GetSequence(), true, 0) }

// Nack asks for the message again after delay (0: at once) and waits for the confirmation.
func (d *Delivery) Nack(ctx context.Context, delay time.Duration) error {
	return d.sub.settle(ctx, d.GetSequence(), false, delay)
}

type settleKey struct {
	sequence uint64
	ack      bool
}

// Subscription consumes a topic: Next yields deliveries. It lives across consume streams:
// when one breaks (a node fails) it opens another on the next endpoint, for ResubscribeFor.
type Subscription struct {
	topic   *Topic
	options SubscribeOptions
	silence time.Duration

	mu       sync.Mutex
	queue    []*streampb.Message
	ended    error
	ready    chan struct{} // signalled (non-blocking) when queue or ended changes
	waiters  map[settleKey][]chan streampb.SettleOutcome
	requests chan *streampb.ConsumeRequest

	// lastSequence is where an ephemeral subscription resumes; remaining counts a Limit.
	lastSequence uint64
	remaining    uint64

	resubscribed int
	cancel       context.CancelFunc
	done         chan struct{}
}

// Subscribe opens a subscription; it fails if the first stream cannot be opened.
func (t *Topic) Subscribe(ctx context.Context, o SubscribeOptions) (*Subscription, error) {
	heartbeat := o.Heartbeat
	if heartbeat <= 0 {
		heartbeat = defaultHeartbeat
	}
	if o.ResubscribeFor == 0 {
		o.ResubscribeFor = defaultResubscribeFor
	}
	life, cancel := context.WithCancel(context.Background())
	s := &Subscription{
		topic: t, options: o, silence: heartbeat * silentHeartbeats,
		ready: make(chan struct{}, 1), waiters: map[settleKey][]chan streampb.SettleOutcome{},
		requests: make(chan *streampb.ConsumeRequest, 64), remaining: o.Limit,
		cancel: cancel, done: make(chan struct{}),
	}
	first, err := s.open(ctx, life)
	if err != nil {
		cancel()
		return nil, err
	}
	go s.run(life, first)
	return s, nil
}

// Next waits for the next delivery; after the subscription ends, its error (ErrClosed after
// Close or once a Limit is reached).
func (s *Subscription) Next(ctx context.Context) (*Delivery, error) {
	for {
		s.mu.Lock()
		if len(s.queue) > 0 {
			m := s.queue[0]
			s.queue[0] = nil
			s.queue = s.queue[1:]
			if len(s.queue) > 0 {
				s.signal() // for another goroutine waiting in Next
			}
			s.mu.Unlock()
			return &Delivery{Message: m, sub: s}, nil
		}
		ended := s.ended
		s.mu.Unlock()
		if ended != nil {
			return nil, ended
		}
		select {
		case <-s.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Resubscribed counts the streams opened again after one broke.
func (s *Subscription) Resubscribed() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.resubscribed
}

// Close ends the subscription; unacked messages of a group go to other members after their
// ack wait.
func (s *Subscription) Close() error {
	s.cancel()
	<-s.done
	return nil
}

func (s *Subscription) settle(ctx context.Context, sequence uint64, ack bool, delay time.Duration) error {
	request := &streampb.ConsumeRequest{Request: &streampb.ConsumeRequest_Ack{Ack: &streampb.Ack{Sequences: []uint64{sequence}}}}
	if !ack {
		request.Request = &streampb.ConsumeRequest_Nack{Nack: &streampb.Nack{Sequences: []uint64{sequence}, DelayMs: uint64(delay.Milliseconds())}}
	}
	key := settleKey{sequence, ack}
	answer := make(chan streampb.SettleOutcome, 1)
	s.mu.Lock()
	if s.ended != nil {
		s.mu.Unlock()
		return s.ended
	}
	s.waiters[key] = append(s.waiters[key], answer)
	s.mu.Unlock()
	timeout := s.topic.c.opts.requestTimeout
	if timeout <= 0 {
		timeout = DefaultSettleTimeout
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	unknown := func() error {
		return &Error{Kind: ErrOutcomeUnknown, Message: fmt.Sprintf("no confirmation of settling %d within %v", sequence, timeout)}
	}
	sent := false
	defer func() {
		if !sent {
			s.dropWaiter(key, answer)
		}
	}()
	select {
	case s.requests <- request:
		sent = true
	case <-s.done:
		return &Error{Kind: ErrClosed, Message: "the subscription ended"}
	case <-timer.C:
		return unknown() // the stream is being opened again, or the session is stuck
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case outcome, ok := <-answer:
		if !ok {
			return &Error{Kind: ErrOutcomeUnknown, Message: fmt.Sprintf("the consume stream broke before the server confirmed settling %d; it may be delivered again", sequence)}
		}
		switch outcome {
		case streampb.SettleOutcome_SETTLE_OUTCOME_DONE, streampb.SettleOutcome_SETTLE_OUTCOME_ALREADY_SETTLED:
			return nil
		default:
			return &Error{Kind: ErrPreconditionFailed, Message: fmt.Sprintf("settling %d: %s", sequence, outcome)}
		}
	case <-timer.C:
		return unknown()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// attempt is one open consume stream.
type attempt struct {
	index   int
	stream  grpc.BidiStreamingClient[streampb.ConsumeRequest, streampb.ConsumeResponse]
	cancel  context.CancelFunc
	inbound chan inbound
}

type inbound struct {
	response *streampb.ConsumeResponse
	err      error
}

// open opens a consume stream on the preferred endpoint and waits for the server to accept
// the subscription (its response headers).
func (s *Subscription) open(ctx, life context.Context) (*attempt, error) {
	c := s.topic.c
	index, e := c.current()
	subscribe := &streampb.Subscribe{
		Topic: s.topic.name, Group: s.options.Group, Start: s.options.Start.position,
		AutoAck: s.options.AutoAck, AckWaitMs: uint64(s.options.AckWait.Milliseconds()),
		MaxDeliveries: s.options.MaxDeliveries, MaxInFlight: s.options.MaxInFlight,
		DeadLetterTopic: s.options.DeadLetterTopic, Limit: s.remaining,
		HeartbeatMs: uint32(s.silence.Milliseconds() / silentHeartbeats),
	}
	s.mu.Lock()
	if s.options.Group == "" && s.lastSequence > 0 {
		subscribe.Start = AtSequence(s.lastSequence + 1).position
	}
	s.mu.Unlock()
	streamCtx, cancel := context.WithCancel(c.outgoing(life))
	stream, err := streampb.NewStreamClient(e.conn).Consume(streamCtx)
	if err == nil {
		err = stream.Send(&streampb.ConsumeRequest{Request: &streampb.ConsumeRequest_Subscribe{Subscribe: subscribe}})
	}
	opened := make(chan error, 1)
	fromHeader := false
	if err == nil {
		go func() {
			_, err := stream.Header()
			opened <- err
		}()
		timer := time.NewTimer(s.silence)
		select {
		case err = <-opened:
			fromHeader = err != nil
		case <-timer.C:
			err = status.Errorf(codes.Unavailable, "%s did not open the consume stream within %v", e.name, s.silence)
		case <-ctx.Done():
			err = ctx.Err()
		}
		timer.Stop()
	}
	if err != nil {
		cancel()
		var md metadata.MD
		if fromHeader {
			// The status and its trailers come with the Recv after the headers failed.
			if rerr := stream.RecvMsg(new(streampb.ConsumeResponse)); rerr != nil && !errors.Is(rerr, io.EOF) {
				err = rerr
			}
			md = stream.Trailer()
		}
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return nil, err
		}
		return nil, fromStatus(status.Convert(err), md, e.name)
	}
	a := &attempt{index: index, stream: stream, cancel: cancel, inbound: make(chan inbound, 16)}
	go func() {
		for {
			response, err := stream.Recv()
			select {
			case a.inbound <- inbound{response, err}:
			case <-streamCtx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return a, nil
}

// resumable says whether a stream that ended with err may be opened again elsewhere: the node
// or the connection failed, not the request.
func resumable(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	return e.Kind == ErrUnavailable || (e.Code == "" && (e.GRPCCode == codes.Canceled || e.GRPCCode == codes.Unknown))
}

func (s *Subscription) run(life context.Context, a *attempt) {
	defer close(s.done)
	for {
		err := s.pump(life, a)
		a.cancel()
		s.failWaiters()
		if err == nil || life.Err() != nil {
			s.end(&Error{Kind: ErrClosed, Message: "the subscription ended"})
			return
		}
		if !resumable(err) || s.options.ResubscribeFor < 0 {
			s.end(err)
			return
		}
		c := s.topic.c
		c.moveOn(a.index)
		next, rerr := s.reopen(life)
		if rerr != nil {
			s.end(rerr)
			return
		}
		s.mu.Lock()
		s.resubscribed++
		s.mu.Unlock()
		a = next
	}
}

// reopen opens the stream again, moving through the endpoints with backoff, for up to
// ResubscribeFor.
func (s *Subscription) reopen(life context.Context) (*attempt, error) {
	giveUp := time.Now().Add(s.options.ResubscribeFor)
	backoff := 50 * time.Millisecond
	for {
		a, err := s.open(life, life)
		if err == nil {
			return a, nil
		}
		if !resumable(err) {
			return nil, err
		}
		index, _ := s.topic.c.current()
		s.topic.c.moveOn(index)
		if time.Now().Add(backoff).After(giveUp) {
			return nil, err
		}
		select {
		case <-time.After(backoff):
		case <-life.Done():
			return nil, &Error{Kind: ErrClosed, Message: "the subscription was closed"}
		}
		backoff = min(backoff*2, time.Second)
	}
}

// pump serves one stream until it ends: nil when the server ended it cleanly (a Limit
// reached) or the subscription closed.
func (s *Subscription) pump(life context.Context, a *attempt) error {
	silence := time.NewTimer(s.silence)
	defer silence.Stop()
	name := s.topic.c.endpoints[a.index].name
	for {
		select {
		case <-life.Done():
			return nil
		case <-silence.C:
			return &Error{Kind: ErrUnavailable, Message: fmt.Sprintf("%s sent nothing, not even a heartbeat, for %v: the consume stream is taken as broken", name, s.silence)}
		case request := <-s.requests:
			// A stream that is gone says so on its receiving side.
			_ = a.stream.Send(request)
		case in := <-a.inbound:
			silence.Reset(s.silence)
			if in.err != nil {
				if errors.Is(in.err, io.EOF) {
					return nil
				}
				return fromStatus(status.Convert(in.err), a.stream.Trailer(), name)
			}
			switch r := in.response.GetResponse().(type) {
			case *streampb.ConsumeResponse_Message:
				if err := s.deliver(r.Message); err != nil {
					return err
				}
			case *streampb.ConsumeResponse_Settled:
				key := settleKey{r.Settled.GetSequence(), r.Settled.GetAck()}
				s.mu.Lock()
				for _, w := range s.waiters[key] {
					w <- r.Settled.GetOutcome()
				}
				delete(s.waiters, key)
				s.mu.Unlock()
			}
		}
	}
}

func (s *Subscription) deliver(m *streampb.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) >= maxBacklog {
		return &Error{Kind: ErrConsumerTooSlow, Message: fmt.Sprintf("the consumer fell %d messages behind its subscription; subscribe again (a group resumes from its acked floor)", maxBacklog)}
	}
	s.queue = append(s.queue, m)
	s.lastSequence = m.GetSequence()
	if s.remaining > 0 {
		s.remaining--
	}
	s.signal()
	return nil
}

// dropWaiter forgets a settle that was never sent.
func (s *Subscription) dropWaiter(key settleKey, answer chan streampb.SettleOutcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := s.waiters[key]
	for i, w := range list {
		if w == answer {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(s.waiters, key)
	} else {
		s.waiters[key] = list
	}
}

// failWaiters tells every settle waiting on a broken stream that its outcome is unknown.
func (s *Subscription) failWaiters() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, list := range s.waiters {
		for _, w := range list {
			close(w)
		}
		delete(s.waiters, key)
	}
}

func (s *Subscription) end(err error) {
	s.mu.Lock()
	s.ended = err
	s.signal()
	s.mu.Unlock()
}

func (s *Subscription) signal() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

package strata

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"time"

	streampb "github.com/strata-db/strata/sdk/go/gen/strata/stream/v1"
	"google.golang.org/grpc"
)

// Topic is one event stream of the client's namespace.
type Topic struct {
	c    *Client
	name string
}

// Topic names a stream.
func (c *Client) Topic(name string) *Topic { return &Topic{c: c, name: name} }

// Name is the topic's name.
func (t *Topic) Name() string { return t.name }

// Message is what Publish sends. Its ID makes a publish idempotent: the server drops a repeat
// of the same ID within the topic's dedup window (and says Duplicate). Without one the SDK
// gives it 128 random bits, as the Rust SDK does, so every publish is retried safely, after
// unknown outcomes too.
type Message struct {
	Payload  []byte
	Metadata map[string]string
	ID       string
}

// Published is where a message landed.
type Published struct {
	Sequence    uint64
	TimestampMs uint64
	// Duplicate: a message with the same ID was already in the topic; nothing was appended.
	Duplicate bool
	Revision  uint64
}

func published(r *streampb.PublishResponse) Published {
	return Published{Sequence: r.GetSequence(), TimestampMs: r.GetTimestampMs(), Duplicate: r.GetDuplicate(), Revision: r.GetRevision()}
}

// Publish appends a message (creating the topic if it does not exist) once a majority has it.
func (t *Topic) Publish(ctx context.Context, m Message) (Published, error) {
	request := &streampb.PublishRequest{Topic: t.name, Payload: m.Payload, Metadata: m.Metadata, MessageId: withID(m.ID)}
	response, err := invoke(ctx, t.c, safeIdempotent, func(ctx context.Context, conn grpc.ClientConnInterface, co ...grpc.CallOption) (*streampb.PublishResponse, error) {
		return streampb.NewStreamClient(conn).Publish(ctx, request, co...)
	})
	if err != nil {
		return Published{}, err
	}
	return published(response), nil
}

// PublishBatch appends messages in one replicated write, in order; one result each.
func (t *Topic) PublishBatch(ctx context.Context, messages []Message) ([]Published, error) {
	request := &streampb.PublishBatchRequest{Topic: t.name}
	for _, m := range messages {
		request.Messages = append(request.Messages, &streampb.OutgoingMessage{Payload: m.Payload, Metadata: m.Metadata, MessageId: withID(m.ID)})
	}
	response, err := invoke(ctx, t.c, safeIdempotent, func(ctx context.Context, conn grpc.ClientConnInterface, co ...grpc.CallOption) (*streampb.PublishBatchResponse, error) {
		return streampb.NewStreamClient(conn).PublishBatch(ctx, request, co...)
	})
	if err != nil {
		return nil, err
	}
	out := make([]Published, 0, len(response.GetResults()))
	for _, r := range response.GetResults() {
		out = append(out, published(r))
	}
	return out, nil
}

// withID is id, or 128 random bits in hex when it is empty.
func withID(id string) string {
	if id != "" {
		return id
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Start is where a subscription or a read begins.
type Start struct {
	position *streampb.StartPosition
}

// Earliest starts at the oldest message kept.
func Earliest() Start {
	return Start{&streampb.StartPosition{Position: &streampb.StartPosition_Earliest{Earliest: true}}}
}

// Latest starts after the newest message (new messages only).
func Latest() Start {
	return Start{&streampb.StartPosition{Position: &streampb.StartPosition_Latest{Latest: true}}}
}

// AtSequence starts at sequence n.
func AtSequence(n uint64) Start {
	return Start{&streampb.StartPosition{Position: &streampb.StartPosition_Sequence{Sequence: n}}}
}

// AtTime starts at the first message published at or after t.
func AtTime(t time.Time) Start {
	return Start{&streampb.StartPosition{Position: &streampb.StartPosition_TimeMs{TimeMs: uint64(t.UnixMilli())}}}
}

// Read fetches up to limit messages from a sequence or time (linearizably), without a group.
func (t *Topic) Read(ctx context.Context, from Start, limit uint32) (*streampb.ReadResponse, error) {
	request := &streampb.ReadRequest{Topic: t.name, Limit: limit, Linearizable: true}
	switch p := from.position.GetPosition().(type) {
	case *streampb.StartPosition_Sequence:
		request.From = &streampb.ReadRequest_Sequence{Sequence: p.Sequence}
	case *streampb.StartPosition_TimeMs:
		request.From = &streampb.ReadRequest_TimeMs{TimeMs: p.TimeMs}
	case *streampb.StartPosition_Latest:
		return nil, &Error{Kind: ErrInvalidArgument, Message: "a read starts at a sequence, a time or the earliest message"}
	}
	return invoke(ctx, t.c, safeRead, func(ctx context.Context, conn grpc.ClientConnInterface, co ...grpc.CallOption) (*streampb.ReadResponse, error) {
		return streampb.NewStreamClient(conn).Read(ctx, request, co...)
	})
}

// Create makes the topic with a retention (nil: the server's default); created is false when
// it already existed.
func (t *Topic) Create(ctx context.Context, retention *streampb.Retention) (created bool, err error) {
	request := &streampb.CreateTopicRequest{Topic: t.name, Retention: retention}
	response, err := invoke(ctx, t.c, safeWrite, func(ctx context.Context, conn grpc.ClientConnInterface, co ...grpc.CallOption) (*streampb.TopicResponse, error) {
		return streampb.NewStreamClient(conn).CreateTopic(ctx, request, co...)
	})
	return response.GetCreated(), err
}

// Update replaces the topic's retention.
func (t *Topic) Update(ctx context.Context, retention *streampb.Retention) error {
	request := &streampb.UpdateTopicRequest{Topic: t.name, Retention: retention}
	_, err := invoke(ctx, t.c, safeWrite, func(ctx context.Context, conn grpc.ClientConnInterface, co ...grpc.CallOption) (*streampb.TopicResponse, error) {
		return streampb.NewStreamClient(conn).UpdateTopic(ctx, request, co...)
	})
	return err
}

// Delete removes the topic, its messages and its groups.
func (t *Topic) Delete(ctx context.Context) error {
	request := &streampb.DeleteTopicRequest{Topic: t.name}
	_, err := invoke(ctx, t.c, safeWrite, func(ctx context.Context, conn grpc.ClientConnInterface, co ...grpc.CallOption) (*streampb.DeleteTopicResponse, error) {
		return streampb.NewStreamClient(conn).DeleteTopic(ctx, request, co...)
	})
	return err
}

// Info describes the topic and its consumer groups.
func (t *Topic) Info(ctx context.Context) (*streampb.TopicInfoResponse, error) {
	request := &streampb.TopicInfoRequest{Topic: t.name}
	return invoke(ctx, t.c, safeRead, func(ctx context.Context, conn grpc.ClientConnInterface, co ...grpc.CallOption) (*streampb.TopicInfoResponse, error) {
		return streampb.NewStreamClient(conn).TopicInfo(ctx, request, co...)
	})
}

// DeleteGroup removes a consumer group and its position.
func (t *Topic) DeleteGroup(ctx context.Context, group string) error {
	request := &streampb.DeleteGroupRequest{Topic: t.name, Group: group}
	_, err := invoke(ctx, t.c, safeWrite, func(ctx context.Context, conn grpc.ClientConnInterface, co ...grpc.CallOption) (*streampb.DeleteGroupResponse, error) {
		return streampb.NewStreamClient(conn).DeleteGroup(ctx, request, co...)
	})
	return err
}

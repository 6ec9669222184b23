package strata

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const (
	// watchProgress is how often an idle watch asks the server to say it is alive.
	watchProgress = 5 * time.Second
	// watchSilence: nothing for this long and the watch stream is taken as broken.
	watchSilence = 3 * watchProgress
	// watchResumeFor is how long a broken watch keeps trying to resume elsewhere.
	watchResumeFor = time.Minute
)

// Watch is a stream of changes (kv, registry or config), one mechanism for all three, as in
// the Rust SDK: when its stream breaks or falls silent it is opened again on the next
// endpoint from the revision after the last one seen, so the caller sees every revision once
// and in order. A watch whose position is not known yet (opened "from now" and broken before
// its first message, or in the middle of a registry snapshot) is not resumed: Next returns
// the error. Progress notices (no changes, a newer revision) come through too.
type Watch[T any] struct {
	items  chan *T
	err    error
	cancel context.CancelFunc
	done   chan struct{}
}

// watchSpec is how to open one kind of watch from a revision, and what a response says was
// seen (false: the position is not known yet).
type watchSpec[T any] struct {
	open func(ctx context.Context, conn grpc.ClientConnInterface, from uint64) (grpc.ServerStreamingClient[T], error)
	seen func(*T) (uint64, bool)
	from uint64
	// fragment says more of a response's revision follows (nil: never); join appends such a
	// next fragment to what was received of the revision. The watch delivers revisions whole.
	fragment func(*T) bool
	join     func(acc, next *T)
}

func startWatch[T any](ctx context.Context, c *Client, spec watchSpec[T]) (*Watch[T], error) {
	life, cancel := context.WithCancel(context.Background())
	index, stream, stop, err := openWatch(ctx, life, c, spec, spec.from)
	for retry := 1; err != nil && resumable(err) && retry < c.opts.retry.Attempts; retry++ {
		c.moveOn(index)
		select {
		case <-time.After(c.opts.retry.delay(retry - 1)):
		case <-ctx.Done():
			cancel()
			return nil, ctx.Err()
		}
		index, stream, stop, err = openWatch(ctx, life, c, spec, spec.from)
	}
	if err != nil {
		cancel()
		return nil, err
	}
	w := &Watch[T]{items: make(chan *T, 64), cancel: cancel, done: make(chan struct{})}
	go w.run(life, c, spec, index, stream, stop)
	return w, nil
}

// openWatch opens the watch on the preferred endpoint and waits for the server to accept it
// (its response headers), so that a refusal (a compacted revision, say) comes back here.
// The cancel function it returns closes the stream.
func openWatch[T any](ctx, life context.Context, c *Client, spec watchSpec[T], from uint64) (int, grpc.ServerStreamingClient[T], context.CancelFunc, error) {
	index, e := c.current()
	streamCtx, cancel := context.WithCancel(c.outgoing(life))
	stream, err := spec.open(streamCtx, e.conn, from)
	if err != nil {
		cancel()
		return index, nil, nil, fromStatus(status.Convert(err), nil, e.name)
	}
	opened := make(chan error, 1)
	go func() {
		_, err := stream.Header()
		opened <- err
	}()
	timer := time.NewTimer(watchSilence)
	defer timer.Stop()
	select {
	case err = <-opened:
	case <-timer.C:
		cancel()
		return index, nil, nil, &Error{Kind: ErrUnavailable, GRPCCode: codes.Unavailable, Message: fmt.Sprintf("%s did not open the watch within %v", e.name, watchSilence), Endpoint: e.name}
	case <-ctx.Done():
		cancel()
		return index, nil, nil, ctx.Err()
	}
	if err != nil {
		// The status and its trailers come with the Recv after the headers failed.
		if _, rerr := stream.Recv(); rerr != nil && !errors.Is(rerr, io.EOF) {
			err = rerr
		}
		md := stream.Trailer()
		cancel()
		return index, nil, nil, fromStatus(status.Convert(err), md, e.name)
	}
	context.AfterFunc(life, cancel)
	return index, stream, cancel, nil
}

func (w *Watch[T]) run(life context.Context, c *Client, spec watchSpec[T], index int, stream grpc.ServerStreamingClient[T], stop context.CancelFunc) {
	defer close(w.done)
	defer close(w.items)
	closed := &Error{Kind: ErrClosed, Message: "the watch was closed"}
	var seen uint64
	known := false
	for {
		err := w.pump(life, c, spec, index, stream, &seen, &known)
		stop() // a silent stream may still be open: close it before opening another
		if life.Err() != nil {
			w.err = closed
			return
		}
		if !resumable(err) || !known {
			w.err = err
			return
		}
		// Resume after the last revision seen, on the next endpoint, with backoff.
		c.moveOn(index)
		giveUp := time.Now().Add(watchResumeFor)
		backoff := 50 * time.Millisecond
		for {
			index, stream, stop, err = openWatch(life, life, c, spec, seen+1)
			if err == nil {
				break
			}
			c.moveOn(index)
			if !resumable(err) || time.Now().Add(backoff).After(giveUp) {
				w.err = err
				return
			}
			select {
			case <-time.After(backoff):
			case <-life.Done():
				w.err = closed
				return
			}
			backoff = min(backoff*2, time.Second)
		}
	}
}

func (w *Watch[T]) pump(life context.Context, c *Client, spec watchSpec[T], index int, stream grpc.ServerStreamingClient[T], seen *uint64, known *bool) error {
	type received struct {
		item *T
		err  error
	}
	inbound := make(chan received)
	streamCtx := stream.Context()
	go func() {
		for {
			item, err := stream.Recv()
			select {
			case inbound <- received{item, err}:
			case <-streamCtx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	name := c.endpoints[index].name
	silence := time.NewTimer(watchSilence)
	defer silence.Stop()
	// The fragments of a revision so far; dropped if the stream breaks (the watch resumes
	// before that revision, which then comes again whole).
	var partial *T
	for {
		select {
		case <-life.Done():
			return nil
		case <-silence.C:
			return &Error{Kind: ErrUnavailable, Message: fmt.Sprintf("%s sent nothing, not even progress, for %v: the watch is taken as broken", name, watchSilence)}
		case in := <-inbound:
			if in.err != nil {
				if errors.Is(in.err, io.EOF) {
					return &Error{Kind: ErrUnavailable, Message: name + " ended the watch stream"}
				}
				var md metadata.MD = stream.Trailer()
				return fromStatus(status.Convert(in.err), md, name)
			}
			silence.Reset(watchSilence)
			more := spec.fragment != nil && spec.fragment(in.item)
			if partial != nil {
				spec.join(partial, in.item)
				in.item, partial = partial, nil
			}
			if more {
				partial = in.item
				continue
			}
			if r, ok := spec.seen(in.item); ok {
				*seen, *known = max(*seen, r), true
			}
			select {
			case w.items <- in.item:
			case <-life.Done():
				return nil
			}
		}
	}
}

// Next waits for the next change or progress notice; after the watch ends, its error.
func (w *Watch[T]) Next(ctx context.Context) (*T, error) {
	var zero *T
	select {
	case item, ok := <-w.items:
		if !ok {
			return zero, w.err
		}
		return item, nil
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// Close ends the watch.
func (w *Watch[T]) Close() {
	w.cancel()
	for range w.items {
	}
	<-w.done
}

// Package registry is go-micro v5's registry.Registry over Strata's service registry. go-micro
// v5 has no domains: services live in the client's namespace (or "micro" when the client
// names none, where Micro v3's default domain puts them too). A node's TTL is a Strata lease
// and watches carry one create, update or delete per node, expiries included.
package registry

import (
	"context"
	"errors"
	"sync"

	"github.com/strata-db/strata/sdk/go/internal/microkit"
	"github.com/strata-db/strata/sdk/go/strata"
	"go-micro.dev/v5/registry"
)

type strataRegistry struct {
	kit    microkit.Registry
	domain string
	mu     sync.RWMutex
	opts   registry.Options
}

// NewRegistry is a go-micro registry over client.
func NewRegistry(client *strata.Client, opts ...registry.Option) registry.Registry {
	r := &strataRegistry{kit: microkit.Registry{Client: client}, domain: client.Namespace(), opts: *registry.NewOptions(opts...)}
	return r
}

func (r *strataRegistry) Init(opts ...registry.Option) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, o := range opts {
		o(&r.opts)
	}
	return nil
}

func (r *strataRegistry) Options() registry.Options {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.opts
}

func (r *strataRegistry) String() string { return "strata" }

func (r *strataRegistry) context(parent context.Context) (context.Context, context.CancelFunc) {
	if parent == nil {
		parent = context.Background()
	}
	timeout := r.Options().Timeout
	if timeout <= 0 {
		timeout = microkit.CallTimeout
	}
	return context.WithTimeout(parent, timeout)
}

func (r *strataRegistry) Register(s *registry.Service, opts ...registry.RegisterOption) error {
	var o registry.RegisterOptions
	for _, opt := range opts {
		opt(&o)
	}
	service, err := microkit.Convert[*microkit.Service](s)
	if err != nil {
		return err
	}
	ctx, cancel := r.context(o.Context)
	defer cancel()
	return r.kit.Register(ctx, r.domain, service, o.TTL)
}

func (r *strataRegistry) Deregister(s *registry.Service, opts ...registry.DeregisterOption) error {
	var o registry.DeregisterOptions
	for _, opt := range opts {
		opt(&o)
	}
	service, err := microkit.Convert[*microkit.Service](s)
	if err != nil {
		return err
	}
	ctx, cancel := r.context(o.Context)
	defer cancel()
	return r.kit.Deregister(ctx, r.domain, service)
}

func (r *strataRegistry) GetService(name string, opts ...registry.GetOption) ([]*registry.Service, error) {
	var o registry.GetOptions
	for _, opt := range opts {
		opt(&o)
	}
	ctx, cancel := r.context(o.Context)
	defer cancel()
	services, err := r.kit.GetService(ctx, r.domain, name)
	if errors.Is(err, microkit.ErrNotFound) {
		return nil, registry.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return microkit.Convert[[]*registry.Service](services)
}

func (r *strataRegistry) ListServices(opts ...registry.ListOption) ([]*registry.Service, error) {
	var o registry.ListOptions
	for _, opt := range opts {
		opt(&o)
	}
	ctx, cancel := r.context(o.Context)
	defer cancel()
	services, err := r.kit.ListServices(ctx, r.domain)
	if err != nil {
		return nil, err
	}
	return microkit.Convert[[]*registry.Service](services)
}

func (r *strataRegistry) Watch(opts ...registry.WatchOption) (registry.Watcher, error) {
	var o registry.WatchOptions
	for _, opt := range opts {
		opt(&o)
	}
	ctx, cancel := r.context(o.Context)
	defer cancel()
	w, err := r.kit.Watch(ctx, o.Context, r.domain, o.Service)
	if err != nil {
		return nil, err
	}
	return watcher{w}, nil
}

type watcher struct{ *microkit.Watcher }

func (w watcher) Next() (*registry.Result, error) {
	result, err := w.Watcher.Next()
	if errors.Is(err, microkit.ErrWatcherStopped) {
		return nil, registry.ErrWatcherStopped
	}
	if err != nil {
		return nil, err
	}
	service, err := microkit.Convert[*registry.Service](result.Service)
	if err != nil {
		return nil, err
	}
	return &registry.Result{Action: result.Action, Service: service}, nil
}

package strata

import (
	"context"
	"math"
	"sync"
	"time"

	regpb "github.com/strata-db/strata/sdk/go/gen/strata/registry/v1"
	"google.golang.org/grpc"
)

// Service is a registered service: a name, a version and its nodes (regpb.Service).
type Service = regpb.Service

// Registry is the service registry of the client's namespace.
type Registry struct{ c *Client }

// Registry is the client's service registry.
func (c *Client) Registry() *Registry { return &Registry{c: c} }

// Register adds or refreshes the service's nodes, which expire ttl (whole seconds, rounded up;
// at most a day) after their last registration; with ttl 0 they are permanent (Micro's TTL 0)
// and stay until deregistered. Idempotent: retried after unknown outcomes too.
func (r *Registry) Register(ctx context.Context, svc *Service, ttl time.Duration) (*regpb.RegisterResponse, error) {
	request := &regpb.RegisterRequest{Service: svc, TtlSeconds: uint32(min(ceilUnits(ttl, time.Second), math.MaxUint32)), Permanent: ttl <= 0}
	return invoke(ctx, r.c, safeIdempotent, func(ctx context.Context, conn grpc.ClientConnInterface, co ...grpc.CallOption) (*regpb.RegisterResponse, error) {
		return regpb.NewRegistryClient(conn).Register(ctx, request, co...)
	})
}

// Deregister removes nodes of a service version (none named: every node of it; version "":
// "latest"). The count removed.
func (r *Registry) Deregister(ctx context.Context, name, version string, nodeIDs ...string) (uint32, error) {
	request := &regpb.DeregisterRequest{Name: name, Version: version, NodeIds: nodeIDs}
	response, err := invoke(ctx, r.c, safeIdempotent, func(ctx context.Context, conn grpc.ClientConnInterface, co ...grpc.CallOption) (*regpb.DeregisterResponse, error) {
		return regpb.NewRegistryClient(conn).Deregister(ctx, request, co...)
	})
	return response.GetRemoved(), err
}

// GetService returns every version of a service with its live nodes; ErrNotFound when none.
func (r *Registry) GetService(ctx context.Context, name string, consistency regpb.Consistency) ([]*Service, error) {
	request := &regpb.GetServiceRequest{Name: name, Consistency: consistency}
	response, err := invoke(ctx, r.c, safeRead, func(ctx context.Context, conn grpc.ClientConnInterface, co ...grpc.CallOption) (*regpb.GetServiceResponse, error) {
		return regpb.NewRegistryClient(conn).GetService(ctx, request, co...)
	})
	return response.GetServices(), err
}

// ListServices returns every (service, version) with its nodes, reading a large registry
// page by page (each page holds whole services, up to about 10,000 nodes).
func (r *Registry) ListServices(ctx context.Context, consistency regpb.Consistency) ([]*Service, error) {
	var services []*Service
	var token []byte
	for {
		request := &regpb.ListServicesRequest{Consistency: consistency, PageToken: token}
		response, err := invoke(ctx, r.c, safeRead, func(ctx context.Context, conn grpc.ClientConnInterface, co ...grpc.CallOption) (*regpb.ListServicesResponse, error) {
			return regpb.NewRegistryClient(conn).ListServices(ctx, request, co...)
		})
		if err != nil {
			return nil, err
		}
		services = append(services, response.GetServices()...)
		token = response.GetNextPageToken()
		if len(token) == 0 {
			return services, nil
		}
	}
}

// RegistryWatchOptions: Service "" watches every service; From 0 starts now; Snapshot first
// sends the current state (responses with Snapshot set, the last with SnapshotComplete).
type RegistryWatchOptions struct {
	Service  string
	From     uint64
	Snapshot bool
}

// Watch streams per-node create/update/delete events.
func (r *Registry) Watch(ctx context.Context, o RegistryWatchOptions) (*Watch[regpb.WatchResponse], error) {
	snapshot := o.Snapshot
	return startWatch(ctx, r.c, watchSpec[regpb.WatchResponse]{
		from: o.From,
		open: func(ctx context.Context, conn grpc.ClientConnInterface, from uint64) (grpc.ServerStreamingClient[regpb.WatchResponse], error) {
			// Only the first stream asks for the snapshot; a resumed one goes on from revisions.
			first := snapshot && from == o.From
			return regpb.NewRegistryClient(conn).Watch(ctx, &regpb.WatchRequest{
				Service: o.Service, StartRevision: from, InitialSnapshot: first,
				ProgressIntervalMs: uint32(watchProgress.Milliseconds()),
			})
		},
		// Inside a snapshot the position is not known until it completes.
		seen: func(w *regpb.WatchResponse) (uint64, bool) {
			if w.GetSnapshot() && !w.GetSnapshotComplete() {
				return 0, false
			}
			return w.GetRevision(), w.GetRevision() > 0
		},
	})
}

// Registration keeps a service registered: it registers again every third of its TTL until
// Stop or Deregister.
type Registration struct {
	registry *Registry
	service  *Service
	cancel   context.CancelFunc
	done     chan struct{}
	mu       sync.Mutex
	lastErr  error
}

// KeepRegistered registers svc now (failing if that fails) and keeps it registered.
func (r *Registry) KeepRegistered(ctx context.Context, svc *Service, ttl time.Duration) (*Registration, error) {
	if ttl < 3*time.Second {
		return nil, &Error{Kind: ErrInvalidArgument, Message: "a kept registration needs a TTL of at least 3 s"}
	}
	if _, err := r.Register(ctx, svc, ttl); err != nil {
		return nil, err
	}
	life, cancel := context.WithCancel(context.Background())
	g := &Registration{registry: r, service: svc, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(g.done)
		ticker := time.NewTicker(ttl / 3)
		defer ticker.Stop()
		for {
			select {
			case <-life.Done():
				return
			case <-ticker.C:
			}
			attempt, stop := context.WithTimeout(life, ttl/3)
			_, err := r.Register(attempt, svc, ttl)
			stop()
			g.mu.Lock()
			g.lastErr = err
			g.mu.Unlock()
		}
	}()
	return g, nil
}

// LastError is the error of the latest renewal (nil when it worked).
func (g *Registration) LastError() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.lastErr
}

// Stop ends the renewals; the nodes expire after their TTL.
func (g *Registration) Stop() {
	g.cancel()
	<-g.done
}

// Deregister ends the renewals and removes the service's nodes now.
func (g *Registration) Deregister(ctx context.Context) error {
	g.Stop()
	ids := make([]string, 0, len(g.service.GetNodes()))
	for _, n := range g.service.GetNodes() {
		ids = append(ids, n.GetId())
	}
	_, err := g.registry.Deregister(ctx, g.service.GetName(), g.service.GetVersion(), ids...)
	return err
}

// ceilUnits is d in whole units, rounded up, so that a short positive duration never becomes
// 0 ("never").
func ceilUnits(d, unit time.Duration) uint64 {
	if d <= 0 {
		return 0
	}
	return uint64(d/unit) + min(uint64(d%unit), 1)
}

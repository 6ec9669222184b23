// Package microkit is what Strata's plugins for Micro v3 and go-micro v5 share: the mapping
// of Micro's registry, store and broker onto the Go SDK, written once over Micro-shaped
// types. The two frameworks' types have the same JSON form, so each plugin converts with
// Convert and stays a thin adapter of its interface.
package microkit

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"sync"
	"time"

	regpb "github.com/strata-db/strata/sdk/go/gen/strata/registry/v1"
	"github.com/strata-db/strata/sdk/go/strata"
)

// CallTimeout bounds each call: Micro's interfaces take no context.
const CallTimeout = 30 * time.Second

// DefaultDomain is Micro's registry domain, database, table and config namespace default.
const DefaultDomain = "micro"

// domainKey is the metadata key Micro's registries set on a service and its nodes.
const domainKey = "domain"

var (
	// ErrNotFound: no live node of the service.
	ErrNotFound = errors.New("service not found")
	// ErrWatcherStopped: the watcher was stopped.
	ErrWatcherStopped = errors.New("watcher stopped")
)

// Convert copies v into a T through their common JSON form (Micro v3's and go-micro v5's
// registry types, say).
func Convert[T any](v any) (T, error) {
	var out T
	data, err := json.Marshal(v)
	if err == nil {
		err = json.Unmarshal(data, &out)
	}
	return out, err
}

// Service, Endpoint, Node and Value are Micro's registry types, by their JSON form.
type Service struct {
	Name      string            `json:"name"`
	Version   string            `json:"version"`
	Metadata  map[string]string `json:"metadata"`
	Endpoints []*Endpoint       `json:"endpoints"`
	Nodes     []*Node           `json:"nodes"`
}

type Endpoint struct {
	Name     string            `json:"name"`
	Request  *Value            `json:"request"`
	Response *Value            `json:"response"`
	Metadata map[string]string `json:"metadata"`
}

type Node struct {
	Id       string            `json:"id"`
	Address  string            `json:"address"`
	Metadata map[string]string `json:"metadata"`
}

type Value struct {
	Name   string   `json:"name"`
	Type   string   `json:"type"`
	Values []*Value `json:"values"`
}

// Registry is Micro's registry over Strata's: domain D is namespace D ("*": every namespace,
// for a super-tenant admin); a node's TTL is a Strata lease; an unchanged re-registration is
// a refresh with no watch event, as with etcd.
type Registry struct {
	Client *strata.Client
}

func domainOr(d string) string {
	if d == "" {
		return DefaultDomain
	}
	return d
}

func (r Registry) in(domain string) *strata.Registry {
	return r.Client.InNamespace(domainOr(domain)).Registry()
}

// Register registers (or refreshes) the service's nodes, expiring ttl after (0: never).
func (r Registry) Register(ctx context.Context, domain string, s *Service, ttl time.Duration) error {
	if s == nil || s.Name == "" {
		return errors.New("registry: a service needs a name")
	}
	_, err := r.in(domain).Register(ctx, toStrata(s), ttl)
	return err
}

// Deregister removes the service's nodes (etcd deletes each node's key: no nodes, nothing).
func (r Registry) Deregister(ctx context.Context, domain string, s *Service) error {
	if s == nil || s.Name == "" {
		return errors.New("registry: a service needs a name")
	}
	ids := make([]string, 0, len(s.Nodes))
	for _, n := range s.Nodes {
		if n != nil {
			ids = append(ids, n.Id)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	_, err := r.in(domain).Deregister(ctx, s.Name, s.Version, ids...)
	return err
}

// GetService is every version of a service that has live nodes; ErrNotFound when none.
// Serializable, as etcd's plugin reads.
func (r Registry) GetService(ctx context.Context, domain, name string) ([]*Service, error) {
	domain = domainOr(domain)
	services, err := r.in(domain).GetService(ctx, name, regpb.Consistency_CONSISTENCY_SERIALIZABLE)
	if errors.Is(err, strata.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	var out []*Service
	for _, s := range services {
		if len(s.GetNodes()) > 0 {
			out = append(out, toMicro(s, domain))
		}
	}
	if len(out) == 0 {
		return nil, ErrNotFound
	}
	return out, nil
}

// ListServices is every (service, version), sorted by name.
func (r Registry) ListServices(ctx context.Context, domain string) ([]*Service, error) {
	domain = domainOr(domain)
	services, err := r.in(domain).ListServices(ctx, regpb.Consistency_CONSISTENCY_SERIALIZABLE)
	if err != nil {
		return nil, err
	}
	out := make([]*Service, 0, len(services))
	for _, s := range services {
		out = append(out, toMicro(s, domain))
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Watch starts a watch of one service ("" : all) of a domain, stopped when stop ends (nil:
// only by Stop).
func (r Registry) Watch(ctx, stop context.Context, domain, service string) (*Watcher, error) {
	domain = domainOr(domain)
	watch, err := r.in(domain).Watch(ctx, strata.RegistryWatchOptions{Service: service})
	if err != nil {
		return nil, err
	}
	life, cancel := context.WithCancel(context.Background())
	w := &Watcher{watch: watch, domain: domain, life: life, cancel: cancel}
	if stop != nil {
		context.AfterFunc(stop, w.Stop)
	}
	return w, nil
}

// Watcher gives one result per node change: create, update or delete (an expiry too),
// carrying the service with that node, as etcd's watch gives one per node key.
type Watcher struct {
	watch   *strata.Watch[regpb.WatchResponse]
	domain  string
	pending []Result
	// life ends at Stop: it ends a Next that is waiting.
	life   context.Context
	cancel context.CancelFunc
	once   sync.Once
}

// Result is one change: Action is "create", "update" or "delete".
type Result struct {
	Action  string
	Service *Service
}

// Next waits for the next change; ErrWatcherStopped after Stop.
func (w *Watcher) Next() (Result, error) {
	for len(w.pending) == 0 {
		response, err := w.watch.Next(w.life)
		if w.life.Err() != nil {
			return Result{}, ErrWatcherStopped
		}
		if err != nil {
			return Result{}, err
		}
		for _, e := range response.GetEvents() {
			if action := actionOf(e.GetType()); action != "" {
				w.pending = append(w.pending, Result{Action: action, Service: toMicro(e.GetService(), w.domain)})
			}
		}
	}
	next := w.pending[0]
	w.pending = w.pending[1:]
	return next, nil
}

// Stop ends the watch.
func (w *Watcher) Stop() {
	w.once.Do(func() {
		w.cancel()
		w.watch.Close()
	})
}

func actionOf(t regpb.Event_Type) string {
	switch t {
	case regpb.Event_TYPE_CREATE:
		return "create"
	case regpb.Event_TYPE_UPDATE:
		return "update"
	case regpb.Event_TYPE_DELETE:
		return "delete"
	}
	return ""
}

func toStrata(s *Service) *regpb.Service {
	out := &regpb.Service{Name: s.Name, Version: s.Version, Metadata: withoutDomain(s.Metadata)}
	for _, e := range s.Endpoints {
		if e != nil {
			out.Endpoints = append(out.Endpoints, &regpb.Endpoint{
				Name: e.Name, Request: valueToStrata(e.Request), Response: valueToStrata(e.Response), Metadata: e.Metadata,
			})
		}
	}
	for _, n := range s.Nodes {
		if n != nil {
			out.Nodes = append(out.Nodes, &regpb.Node{Id: n.Id, Address: n.Address, Metadata: withoutDomain(n.Metadata)})
		}
	}
	return out
}

// withoutDomain drops the domain key: it says where a service is stored, it is not data.
func withoutDomain(md map[string]string) map[string]string {
	if _, ok := md[domainKey]; !ok {
		return md
	}
	out := make(map[string]string, len(md))
	for k, v := range md {
		if k != domainKey {
			out[k] = v
		}
	}
	return out
}

func valueToStrata(v *Value) *regpb.TypeInfo {
	if v == nil {
		return nil
	}
	out := &regpb.TypeInfo{Name: v.Name, Type: v.Type}
	for _, child := range v.Values {
		out.Values = append(out.Values, valueToStrata(child))
	}
	return out
}

func valueToMicro(v *regpb.TypeInfo) *Value {
	if v == nil {
		return nil
	}
	out := &Value{Name: v.GetName(), Type: v.GetType()}
	for _, child := range v.GetValues() {
		out.Values = append(out.Values, valueToMicro(child))
	}
	return out
}

// toMicro is Micro's service with `domain` in its metadata and each node's, as Micro's
// registries write it; a "*" read names each service's own namespace.
func toMicro(s *regpb.Service, domain string) *Service {
	if s.GetNamespace() != "" {
		domain = s.GetNamespace()
	}
	out := &Service{Name: s.GetName(), Version: s.GetVersion(), Metadata: withDomain(s.GetMetadata(), domain)}
	for _, e := range s.GetEndpoints() {
		out.Endpoints = append(out.Endpoints, &Endpoint{
			Name: e.GetName(), Request: valueToMicro(e.GetRequest()), Response: valueToMicro(e.GetResponse()), Metadata: e.GetMetadata(),
		})
	}
	for _, n := range s.GetNodes() {
		out.Nodes = append(out.Nodes, &Node{Id: n.GetId(), Address: n.GetAddress(), Metadata: withDomain(n.GetMetadata(), domain)})
	}
	return out
}

func withDomain(md map[string]string, domain string) map[string]string {
	out := make(map[string]string, len(md)+1)
	for k, v := range md {
		out[k] = v
	}
	out[domainKey] = domain
	return out
}

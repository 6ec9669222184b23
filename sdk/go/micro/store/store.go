// Package store is Micro v3's store.Store over Strata's key-value store: Micro's database D,
// table T, key K is Strata's record K in namespace D, database D, table T (the same data
// Strata's Micro store API serves). Writes are linearizable and durable on a majority before
// they return; reads are linearizable; a record's expiry is exact (no lazy sweeper), and
// listing is in key order with limit, offset and descending order.
package store

import (
	"context"
	"errors"
	"sync"

	"github.com/micro/micro/v3/service/store"
	"github.com/strata-db/strata/sdk/go/internal/microkit"
	"github.com/strata-db/strata/sdk/go/strata"
)

type strataStore struct {
	kit  microkit.Store
	mu   sync.RWMutex
	opts store.Options
}

// NewStore is a Micro store over client, whose token must be an admin of the namespaces
// named by the databases it uses.
func NewStore(client *strata.Client, opts ...store.Option) store.Store {
	s := &strataStore{kit: microkit.Store{Client: client}, opts: store.Options{Database: microkit.DefaultDomain, Table: microkit.DefaultDomain, Context: context.Background()}}
	for _, o := range opts {
		o(&s.opts)
	}
	return s
}

func (s *strataStore) Init(opts ...store.Option) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range opts {
		o(&s.opts)
	}
	return nil
}

func (s *strataStore) Options() store.Options {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.opts
}

func (s *strataStore) Close() error   { return nil }
func (s *strataStore) String() string { return "strata" }

// scope fills in the store's database and table where an operation names none.
func (s *strataStore) scope(database, table string) (context.Context, context.CancelFunc, string, string) {
	o := s.Options()
	if database == "" {
		database = o.Database
	}
	if table == "" {
		table = o.Table
	}
	parent := o.Context
	if parent == nil {
		parent = context.Background()
	}
	ctx, cancel := context.WithTimeout(parent, microkit.CallTimeout)
	return ctx, cancel, database, table
}

func (s *strataStore) Read(key string, opts ...store.ReadOption) ([]*store.Record, error) {
	var o store.ReadOptions
	for _, opt := range opts {
		opt(&o)
	}
	ctx, cancel, database, table := s.scope(o.Database, o.Table)
	defer cancel()
	if !o.Prefix && !o.Suffix {
		record, err := s.kit.Get(ctx, database, table, key)
		if errors.Is(err, microkit.ErrRecordNotFound) {
			return nil, store.ErrNotFound
		}
		if err != nil {
			return nil, err
		}
		return []*store.Record{toMicro(record)}, nil
	}
	m := microkit.Match{Offset: o.Offset, Limit: o.Limit, Descending: o.Order == store.OrderDesc}
	if o.Prefix {
		m.Prefix = []byte(key)
	}
	if o.Suffix {
		m.Suffix = []byte(key)
	}
	records, err := s.kit.Find(ctx, database, table, m)
	out := make([]*store.Record, 0, len(records))
	for _, r := range records {
		out = append(out, toMicro(r))
	}
	return out, err
}

func (s *strataStore) Write(r *store.Record, opts ...store.WriteOption) error {
	var o store.WriteOptions
	for _, opt := range opts {
		opt(&o)
	}
	if r == nil {
		return errors.New("store: no record")
	}
	ctx, cancel, database, table := s.scope(o.Database, o.Table)
	defer cancel()
	return s.kit.Write(ctx, database, table, &microkit.Record{Key: r.Key, Value: r.Value, Metadata: r.Metadata, Expiry: r.Expiry})
}

func (s *strataStore) Delete(key string, opts ...store.DeleteOption) error {
	var o store.DeleteOptions
	for _, opt := range opts {
		opt(&o)
	}
	ctx, cancel, database, table := s.scope(o.Database, o.Table)
	defer cancel()
	return s.kit.Delete(ctx, database, table, key)
}

func (s *strataStore) List(opts ...store.ListOption) ([]string, error) {
	var o store.ListOptions
	for _, opt := range opts {
		opt(&o)
	}
	ctx, cancel, database, table := s.scope(o.Database, o.Table)
	defer cancel()
	records, err := s.kit.Find(ctx, database, table, microkit.Match{
		Prefix: []byte(o.Prefix), Suffix: []byte(o.Suffix), Offset: o.Offset, Limit: o.Limit,
		Descending: o.Order == store.OrderDesc, KeysOnly: true,
	})
	keys := make([]string, 0, len(records))
	for _, r := range records {
		keys = append(keys, r.Key)
	}
	return keys, err
}

func toMicro(r *microkit.Record) *store.Record {
	return &store.Record{Key: r.Key, Value: r.Value, Metadata: r.Metadata, Expiry: r.Expiry}
}

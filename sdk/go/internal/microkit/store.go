package microkit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/strata-db/strata/sdk/go/strata"
)

// page is how many records one native page holds while a read walks its matches.
const page = 1_000

// ErrRecordNotFound: no such record.
var ErrRecordNotFound = errors.New("not found")

// Record is Micro's store record; Expiry is the time left to live (0: never expires).
type Record struct {
	Key      string
	Value    []byte
	Metadata map[string]interface{}
	Expiry   time.Duration
}

// Store is Micro's store over Strata's key-value store: database D, table T, key K is the
// record K in namespace D, database D, table T ("" : "micro"). Writes are linearizable and
// durable on a majority before they return; reads are linearizable; expiry is exact.
type Store struct {
	Client *strata.Client
}

// Match is a filtered read or a list: by prefix and/or suffix, from the Offset-th match,
// at most Limit (0: all), in key order or descending.
type Match struct {
	Prefix, Suffix []byte
	Offset, Limit  uint
	Descending     bool
	KeysOnly       bool
}

func (s Store) table(database, table string) *strata.Table {
	database, table = domainOr(database), domainOr(table)
	return s.Client.InNamespace(database).Table(database, table)
}

// Get reads one key; ErrRecordNotFound when absent or expired.
func (s Store) Get(ctx context.Context, database, table, key string) (*Record, error) {
	record, err := s.table(database, table).Get(ctx, []byte(key))
	if err != nil {
		return nil, err
	}
	if record == nil {
		return nil, ErrRecordNotFound
	}
	return toRecord(record), nil
}

// Find walks the matches of m.
func (s Store) Find(ctx context.Context, database, table string, m Match) ([]*Record, error) {
	l := strata.List{Prefix: m.Prefix, Suffix: m.Suffix, Descending: m.Descending, KeysOnly: m.KeysOnly, Limit: page}
	t := s.table(database, table)
	var out []*Record
	offset := m.Offset
	for {
		p, err := t.List(ctx, l)
		if err != nil {
			return nil, err
		}
		for _, r := range p.Records {
			if offset > 0 {
				offset--
				continue
			}
			out = append(out, toRecord(r))
			if m.Limit > 0 && uint(len(out)) >= m.Limit {
				return out, nil
			}
		}
		if p.NextPageToken == "" {
			return out, nil
		}
		l.PageToken = p.NextPageToken
	}
}

// Write upserts a record, expiring after r.Expiry (0: never).
func (s Store) Write(ctx context.Context, database, table string, r *Record) error {
	if r == nil || r.Key == "" {
		return errors.New("store: a record needs a key")
	}
	put := []strata.PutOption{strata.WithMetadata(metadataToStrata(r.Metadata))}
	if r.Expiry > 0 {
		put = append(put, strata.WithTTL(max(r.Expiry, time.Millisecond)))
	}
	_, err := s.table(database, table).Put(ctx, []byte(r.Key), r.Value, put...)
	return err
}

// Delete removes key; an absent key is no error, as in Micro's stores.
func (s Store) Delete(ctx context.Context, database, table, key string) error {
	_, err := s.table(database, table).Delete(ctx, []byte(key))
	return err
}

func toRecord(r *strata.Record) *Record {
	out := &Record{Key: string(r.GetKey()), Value: r.GetValue()}
	if len(r.GetMetadata()) > 0 {
		out.Metadata = make(map[string]interface{}, len(r.GetMetadata()))
		for k, v := range r.GetMetadata() {
			out.Metadata[k] = v
		}
	}
	if at := r.GetExpiresAtMs(); at > 0 {
		out.Expiry = max(time.Until(time.UnixMilli(int64(at))), time.Millisecond)
	}
	return out
}

// metadataToStrata keeps metadata as text, as Micro's store service sends it (fmt's %v).
func metadataToStrata(md map[string]interface{}) map[string]string {
	if len(md) == 0 {
		return nil
	}
	out := make(map[string]string, len(md))
	for k, v := range md {
		out[k] = fmt.Sprintf("%v", v)
	}
	return out
}

package strata

import (
	"context"
	"errors"
	"time"

	kvpb "github.com/strata-db/strata/sdk/go/gen/strata/kv/v1"
	"google.golang.org/grpc"
)

// Record is a stored key with its revisions (kvpb.Record).
type Record = kvpb.Record

// Consistency of a read: Linearizable (the default) sees every write acknowledged before it
// started; Serializable answers from the node's own state, which may lag.
type Consistency = kvpb.Consistency

const (
	Linearizable = kvpb.Consistency_CONSISTENCY_LINEARIZABLE
	Serializable = kvpb.Consistency_CONSISTENCY_SERIALIZABLE
)

// MaxListLimit is the default page size of List and the server's maximum.
const MaxListLimit = 10_000

// Table is one table of one database in the client's namespace.
type Table struct {
	c               *Client
	database, table string
}

// Table names a table ("" for either: "default").
func (c *Client) Table(database, table string) *Table {
	return &Table{c: c, database: database, table: table}
}

// PutOption refines a Put.
type PutOption func(*kvpb.PutRequest)

// WithTTL makes the record expire after d (whole milliseconds, rounded up).
func WithTTL(d time.Duration) PutOption {
	return func(r *kvpb.PutRequest) { r.TtlMs = ceilUnits(d, time.Millisecond) }
}

// WithExpiresAt makes the record expire at t.
func WithExpiresAt(t time.Time) PutOption {
	return func(r *kvpb.PutRequest) { r.ExpiresAtMs = uint64(t.UnixMilli()) }
}

// WithMetadata attaches text fields to the record.
func WithMetadata(md map[string]string) PutOption {
	return func(r *kvpb.PutRequest) { r.Metadata = md }
}

// IfModRevision makes the Put a compare-and-swap: it applies only while the key's mod
// revision is rev (0: the key is absent); otherwise ErrPreconditionFailed.
func IfModRevision(rev uint64) PutOption {
	return func(r *kvpb.PutRequest) { r.ExpectedModRevision = &rev }
}

// CreateOnly applies the Put only if the key is absent; otherwise ErrAlreadyExists.
func CreateOnly() PutOption {
	return func(r *kvpb.PutRequest) { r.CreateOnly = true }
}

// PutResult is where a Put landed: the revision of the write and the key's version.
type PutResult struct {
	Revision uint64
	Version  uint64
}

// Put creates or replaces key. A write: retried only when certainly not applied.
func (t *Table) Put(ctx context.Context, key, value []byte, opts ...PutOption) (PutResult, error) {
	request := &kvpb.PutRequest{Database: t.database, Table: t.table, Key: key, Value: value}
	for _, o := range opts {
		o(request)
	}
	response, err := invoke(ctx, t.c, safeWrite, func(ctx context.Context, conn grpc.ClientConnInterface, co ...grpc.CallOption) (*kvpb.PutResponse, error) {
		return kvpb.NewKvClient(conn).Put(ctx, request, co...)
	})
	if err != nil {
		return PutResult{}, err
	}
	return PutResult{Revision: response.GetRevision(), Version: response.GetVersion()}, nil
}

// Get reads key linearizably; nil (and no error) when it is absent or expired.
func (t *Table) Get(ctx context.Context, key []byte) (*Record, error) {
	return t.GetWith(ctx, key, Linearizable)
}

// GetWith reads key at the given consistency; nil when it is absent or expired.
func (t *Table) GetWith(ctx context.Context, key []byte, consistency Consistency) (*Record, error) {
	request := &kvpb.GetRequest{Database: t.database, Table: t.table, Key: key, Consistency: consistency}
	response, err := invoke(ctx, t.c, safeRead, func(ctx context.Context, conn grpc.ClientConnInterface, co ...grpc.CallOption) (*kvpb.GetResponse, error) {
		return kvpb.NewKvClient(conn).Get(ctx, request, co...)
	})
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return response.GetRecord(), nil
}

// List is a range over a table: by prefix and/or suffix, in key order, in pages.
type List struct {
	Prefix, Suffix, StartAfter []byte
	// Limit per page (0: MaxListLimit).
	Limit       uint32
	Descending  bool
	KeysOnly    bool
	PageToken   string
	Consistency Consistency
}

// ListPage is one page: its records, the token of the next page ("" when this is the last)
// and the revision the page was read at.
type ListPage struct {
	Records       []*Record
	NextPageToken string
	Revision      uint64
}

// List reads one page.
func (t *Table) List(ctx context.Context, l List) (ListPage, error) {
	order := kvpb.Order_ORDER_ASC
	if l.Descending {
		order = kvpb.Order_ORDER_DESC
	}
	request := &kvpb.ListRequest{
		Database: t.database, Table: t.table, Prefix: l.Prefix, Suffix: l.Suffix,
		StartAfter: l.StartAfter, Limit: l.Limit, Order: order, KeysOnly: l.KeysOnly,
		PageToken: l.PageToken, Consistency: l.Consistency,
	}
	response, err := invoke(ctx, t.c, safeRead, func(ctx context.Context, conn grpc.ClientConnInterface, co ...grpc.CallOption) (*kvpb.ListResponse, error) {
		return kvpb.NewKvClient(conn).List(ctx, request, co...)
	})
	if err != nil {
		return ListPage{}, err
	}
	return ListPage{Records: response.GetRecords(), NextPageToken: response.GetNextPageToken(), Revision: response.GetRevision()}, nil
}

// ListAll reads every page.
func (t *Table) ListAll(ctx context.Context, l List) ([]*Record, error) {
	var all []*Record
	for {
		page, err := t.List(ctx, l)
		if err != nil {
			return nil, err
		}
		all = append(all, page.Records...)
		if page.NextPageToken == "" {
			return all, nil
		}
		l.PageToken = page.NextPageToken
	}
}

// Delete removes key; the count removed (0 when it was absent).
func (t *Table) Delete(ctx context.Context, key []byte) (uint64, error) {
	return t.delete(ctx, &kvpb.DeleteRequest{Key: key})
}

// DeleteIf removes key only while its mod revision is rev; otherwise ErrPreconditionFailed.
func (t *Table) DeleteIf(ctx context.Context, key []byte, rev uint64) (uint64, error) {
	return t.delete(ctx, &kvpb.DeleteRequest{Key: key, ExpectedModRevision: &rev})
}

// DeletePrefix removes every key that starts with prefix. The server goes in steps of
// 1,000 keys, each its own revision, so other writes run between them; if the call fails
// half-way, what was deleted stays deleted, and calling again finishes the job.
func (t *Table) DeletePrefix(ctx context.Context, prefix []byte) (uint64, error) {
	return t.delete(ctx, &kvpb.DeleteRequest{Key: prefix, Prefix: true})
}

func (t *Table) delete(ctx context.Context, request *kvpb.DeleteRequest) (uint64, error) {
	request.Database, request.Table = t.database, t.table
	response, err := invoke(ctx, t.c, safeWrite, func(ctx context.Context, conn grpc.ClientConnInterface, co ...grpc.CallOption) (*kvpb.DeleteResponse, error) {
		return kvpb.NewKvClient(conn).Delete(ctx, request, co...)
	})
	if err != nil {
		return 0, err
	}
	return response.GetDeleted(), nil
}

// Txn is a transaction: if every comparison holds, the Then operations apply, otherwise the
// Else ones; atomically, at one revision.
type Txn struct {
	If   []*kvpb.Compare
	Then []*kvpb.TxnOp
	Else []*kvpb.TxnOp
}

// ValueEquals holds when key's value is value.
func ValueEquals(key, value []byte) *kvpb.Compare {
	return &kvpb.Compare{Key: key, Op: kvpb.Compare_OP_EQUAL, Target: &kvpb.Compare_Value{Value: value}}
}

// ModRevisionEquals holds when key's mod revision is rev (0: absent).
func ModRevisionEquals(key []byte, rev uint64) *kvpb.Compare {
	return &kvpb.Compare{Key: key, Op: kvpb.Compare_OP_EQUAL, Target: &kvpb.Compare_ModRevision{ModRevision: rev}}
}

// Exists holds when key's presence is exists.
func Exists(key []byte, exists bool) *kvpb.Compare {
	return &kvpb.Compare{Key: key, Op: kvpb.Compare_OP_EQUAL, Target: &kvpb.Compare_Exists{Exists: exists}}
}

// OpPut is a transaction's put.
func OpPut(key, value []byte) *kvpb.TxnOp {
	return &kvpb.TxnOp{Op: &kvpb.TxnOp_Put{Put: &kvpb.PutOp{Key: key, Value: value}}}
}

// OpDelete is a transaction's delete.
func OpDelete(key []byte) *kvpb.TxnOp {
	return &kvpb.TxnOp{Op: &kvpb.TxnOp_Delete{Delete: &kvpb.DeleteOp{Key: key}}}
}

// OpGet is a transaction's read.
func OpGet(key []byte) *kvpb.TxnOp {
	return &kvpb.TxnOp{Op: &kvpb.TxnOp_Get{Get: &kvpb.GetOp{Key: key}}}
}

// Txn applies a transaction. A write: retried only when certainly not applied.
func (t *Table) Txn(ctx context.Context, txn Txn) (*kvpb.TxnResponse, error) {
	request := &kvpb.TxnRequest{Database: t.database, Table: t.table, Compares: txn.If, Success: txn.Then, Failure: txn.Else}
	return invoke(ctx, t.c, safeWrite, func(ctx context.Context, conn grpc.ClientConnInterface, co ...grpc.CallOption) (*kvpb.TxnResponse, error) {
		return kvpb.NewKvClient(conn).Txn(ctx, request, co...)
	})
}

// Databases lists the namespace's databases.
func (c *Client) Databases(ctx context.Context) ([]string, error) {
	response, err := invoke(ctx, c, safeRead, func(ctx context.Context, conn grpc.ClientConnInterface, co ...grpc.CallOption) (*kvpb.DatabasesResponse, error) {
		return kvpb.NewKvClient(conn).Databases(ctx, &kvpb.DatabasesRequest{}, co...)
	})
	return response.GetDatabases(), err
}

// Tables lists a database's tables.
func (c *Client) Tables(ctx context.Context, database string) ([]string, error) {
	response, err := invoke(ctx, c, safeRead, func(ctx context.Context, conn grpc.ClientConnInterface, co ...grpc.CallOption) (*kvpb.TablesResponse, error) {
		return kvpb.NewKvClient(conn).Tables(ctx, &kvpb.TablesRequest{Database: database}, co...)
	})
	return response.GetTables(), err
}

// Watch streams the changes of key (or of every key under it, with prefix) from revision
// from on (0: from now). Each response holds every matching event of one revision (joined
// from the fragments a large revision comes in), or none (a progress notice: everything up to
// its revision was seen).
func (t *Table) Watch(ctx context.Context, key []byte, prefix bool, from uint64) (*Watch[kvpb.WatchResponse], error) {
	return startWatch(ctx, t.c, watchSpec[kvpb.WatchResponse]{
		from: from,
		open: func(ctx context.Context, conn grpc.ClientConnInterface, from uint64) (grpc.ServerStreamingClient[kvpb.WatchResponse], error) {
			return kvpb.NewKvClient(conn).Watch(ctx, &kvpb.WatchRequest{
				Database: t.database, Table: t.table, Key: key, Prefix: prefix, StartRevision: from,
				ProgressIntervalMs: uint32(watchProgress.Milliseconds()),
			})
		},
		seen:     func(r *kvpb.WatchResponse) (uint64, bool) { return r.GetRevision(), r.GetRevision() > 0 },
		fragment: func(r *kvpb.WatchResponse) bool { return r.GetFragment() },
		join: func(acc, next *kvpb.WatchResponse) {
			acc.Events = append(acc.Events, next.GetEvents()...)
			acc.Fragment = next.GetFragment()
		},
	})
}

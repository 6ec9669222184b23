package strata

import (
	"context"

	configpb "github.com/strata-db/strata/sdk/go/gen/strata/config/v1"
	"google.golang.org/grpc"
)

// Config is the dynamic configuration of the client's namespace: JSON documents by key, read
// and written at dotted paths; values set as secrets are sealed at rest and masked as
// "[secret]" unless read with secrets.
type Config struct{ c *Client }

// Config is the client's dynamic configuration.
func (c *Client) Config() *Config { return &Config{c: c} }

// Get returns the JSON value at path of document key ("" path: the whole document) and the
// document's mod revision; ErrNotFound when absent.
func (g *Config) Get(ctx context.Context, key, path string, secrets bool) (string, uint64, error) {
	request := &configpb.GetRequest{Key: key, Path: path, Secrets: secrets}
	response, err := invoke(ctx, g.c, safeRead, func(ctx context.Context, conn grpc.ClientConnInterface, co ...grpc.CallOption) (*configpb.GetResponse, error) {
		return configpb.NewConfigClient(conn).Get(ctx, request, co...)
	})
	return response.GetValue(), response.GetRevision(), err
}

// Set writes the JSON value at path (objects merge into what is there), sealed when secret.
// The revision of the write (0 when the document was already so).
func (g *Config) Set(ctx context.Context, key, path, valueJSON string, secret bool) (uint64, error) {
	request := &configpb.SetRequest{Key: key, Path: path, Value: valueJSON, Secret: secret}
	// Setting the same value twice leaves the same document: safe to repeat.
	response, err := invoke(ctx, g.c, safeIdempotent, func(ctx context.Context, conn grpc.ClientConnInterface, co ...grpc.CallOption) (*configpb.SetResponse, error) {
		return configpb.NewConfigClient(conn).Set(ctx, request, co...)
	})
	return response.GetRevision(), err
}

// Delete removes the subtree at path ("" : the whole document).
func (g *Config) Delete(ctx context.Context, key, path string) (uint64, error) {
	request := &configpb.DeleteRequest{Key: key, Path: path}
	response, err := invoke(ctx, g.c, safeIdempotent, func(ctx context.Context, conn grpc.ClientConnInterface, co ...grpc.CallOption) (*configpb.DeleteResponse, error) {
		return configpb.NewConfigClient(conn).Delete(ctx, request, co...)
	})
	return response.GetRevision(), err
}

// Read returns a whole document with its revisions.
func (g *Config) Read(ctx context.Context, key string, secrets bool) (*configpb.ReadResponse, error) {
	request := &configpb.ReadRequest{Key: key, Secrets: secrets}
	return invoke(ctx, g.c, safeRead, func(ctx context.Context, conn grpc.ClientConnInterface, co ...grpc.CallOption) (*configpb.ReadResponse, error) {
		return configpb.NewConfigClient(conn).Read(ctx, request, co...)
	})
}

// Keys lists the namespace's document keys under prefix.
func (g *Config) Keys(ctx context.Context, prefix string) ([]string, error) {
	var keys []string
	after := ""
	for {
		request := &configpb.ListKeysRequest{Prefix: prefix, StartAfter: after, Limit: 1_000}
		response, err := invoke(ctx, g.c, safeRead, func(ctx context.Context, conn grpc.ClientConnInterface, co ...grpc.CallOption) (*configpb.ListKeysResponse, error) {
			return configpb.NewConfigClient(conn).ListKeys(ctx, request, co...)
		})
		if err != nil {
			return nil, err
		}
		keys = append(keys, response.GetKeys()...)
		if after = response.GetNextStartAfter(); after == "" {
			return keys, nil
		}
	}
}

// Watch streams the changes of the value at path of document key from revision from on
// (0: now): old and new value per revision (Changed false: a progress notice).
func (g *Config) Watch(ctx context.Context, key, path string, from uint64, secrets bool) (*Watch[configpb.WatchResponse], error) {
	return startWatch(ctx, g.c, watchSpec[configpb.WatchResponse]{
		from: from,
		open: func(ctx context.Context, conn grpc.ClientConnInterface, from uint64) (grpc.ServerStreamingClient[configpb.WatchResponse], error) {
			return configpb.NewConfigClient(conn).Watch(ctx, &configpb.WatchRequest{
				Key: key, Path: path, StartRevision: from, Secrets: secrets,
				ProgressIntervalMs: uint32(watchProgress.Milliseconds()),
			})
		},
		seen: func(w *configpb.WatchResponse) (uint64, bool) { return w.GetRevision(), w.GetRevision() > 0 },
	})
}

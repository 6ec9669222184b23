// Package config is a go-micro v5 config source over a Strata config document: go-micro's
// config (config.NewConfig(config.WithSource(...))) loads the document's JSON, follows its
// changes live through a Strata watch, and writes back through Write. Secrets stay sealed
// unless the source is made WithSecrets.
package config

import (
	"context"
	"errors"
	"time"

	configpb "github.com/strata-db/strata/sdk/go/gen/strata/config/v1"
	"github.com/strata-db/strata/sdk/go/internal/microkit"
	"github.com/strata-db/strata/sdk/go/strata"
	"go-micro.dev/v5/config/source"
)

type strataSource struct {
	config  *strata.Config
	key     string
	secrets bool
}

// Option refines a source.
type Option func(*strataSource)

// WithSecrets reads sealed values in clear (the token must be allowed to).
func WithSecrets() Option { return func(s *strataSource) { s.secrets = true } }

// NewSource is the Strata config document key of the client's namespace as a go-micro source.
func NewSource(client *strata.Client, key string, opts ...Option) source.Source {
	s := &strataSource{config: client.Config(), key: key}
	for _, o := range opts {
		o(s)
	}
	return s
}

func (s *strataSource) String() string { return "strata" }

func changeSet(document string) *source.ChangeSet {
	c := &source.ChangeSet{Data: []byte(document), Format: "json", Source: "strata", Timestamp: time.Now()}
	c.Checksum = c.Sum()
	return c
}

// Read is the whole document ({} when it does not exist yet).
func (s *strataSource) Read() (*source.ChangeSet, error) {
	ctx, cancel := context.WithTimeout(context.Background(), microkit.CallTimeout)
	defer cancel()
	document, err := s.config.Read(ctx, s.key, s.secrets)
	if errors.Is(err, strata.ErrNotFound) {
		return changeSet("{}"), nil
	}
	if err != nil {
		return nil, err
	}
	return changeSet(document.GetDocument()), nil
}

// Write replaces the document's top-level values with the change set's (a JSON object).
func (s *strataSource) Write(c *source.ChangeSet) error {
	ctx, cancel := context.WithTimeout(context.Background(), microkit.CallTimeout)
	defer cancel()
	_, err := s.config.Set(ctx, s.key, "", string(c.Data), false)
	return err
}

// Watch gives the whole document again after each change.
func (s *strataSource) Watch() (source.Watcher, error) {
	ctx, cancel := context.WithTimeout(context.Background(), microkit.CallTimeout)
	defer cancel()
	w, err := s.config.Watch(ctx, s.key, "", 0, s.secrets)
	if err != nil {
		return nil, err
	}
	life, stop := context.WithCancel(context.Background())
	return &watcher{source: s, watch: w, life: life, stop: stop}, nil
}

type watcher struct {
	source *strataSource
	watch  *strata.Watch[configpb.WatchResponse]
	life   context.Context
	stop   context.CancelFunc
}

func (w *watcher) Next() (*source.ChangeSet, error) {
	for {
		change, err := w.watch.Next(w.life)
		if w.life.Err() != nil {
			return nil, source.ErrWatcherStopped
		}
		if err != nil {
			return nil, err
		}
		if change.GetChanged() {
			return changeSet(change.GetNewValue()), nil
		}
	}
}

func (w *watcher) Stop() error {
	w.stop()
	w.watch.Close()
	return nil
}

// Package config is Micro v3's config.Config over Strata's dynamic config: Micro's namespace
// N (default "micro") is Strata's document N in namespace N (the same data Strata's Micro
// config API serves), read and written at Micro's dotted paths. A Set merges in the
// replicated log, so concurrent Sets never lose each other's keys; Set with Secret(true)
// seals the value, and only Get with Secret(true) reads it back (others see "[secret]").
package config

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/micro/micro/v3/service/config"
	"github.com/strata-db/strata/sdk/go/strata"
)

const (
	// DefaultNamespace is Micro's.
	DefaultNamespace = "micro"
	callTimeout      = 30 * time.Second
)

type strataConfig struct {
	config    *strata.Config
	namespace string
}

// NewConfig is Micro's config of namespace ("" : "micro") over client, whose token must be an
// admin of that namespace.
func NewConfig(client *strata.Client, namespace string) config.Config {
	if namespace == "" {
		namespace = DefaultNamespace
	}
	return &strataConfig{config: client.InNamespace(namespace).Config(), namespace: namespace}
}

func options(opts []config.Option) config.Options {
	var o config.Options
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// Get is the value at path; a value that does not exist is JSON null (Exists false), as
// Micro's config service answers.
func (c *strataConfig) Get(path string, opts ...config.Option) (config.Value, error) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	value, _, err := c.config.Get(ctx, c.namespace, path, options(opts).Secret)
	if errors.Is(err, strata.ErrNotFound) {
		return config.NewJSONValue([]byte("null")), nil
	}
	if err != nil {
		return config.NewJSONValue([]byte("null")), err
	}
	return config.NewJSONValue([]byte(value)), nil
}

// Set writes val (JSON-encoded) at path; objects merge into what is there.
func (c *strataConfig) Set(path string, val interface{}, opts ...config.Option) error {
	encoded, err := json.Marshal(val)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	_, err = c.config.Set(ctx, c.namespace, path, string(encoded), options(opts).Secret)
	return err
}

// Delete removes the subtree at path.
func (c *strataConfig) Delete(path string, opts ...config.Option) error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	_, err := c.config.Delete(ctx, c.namespace, path)
	return err
}

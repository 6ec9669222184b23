// Package strata is the Go SDK for Strata: a namespaced key-value store, event streams, a
// service registry and dynamic config, served by a Raft-replicated cluster.
//
//	client, err := strata.Connect([]string{"a:7420", "b:7420", "c:7420"}, strata.WithToken(tok))
//	users := client.Table("app", "users")
//	put, err := users.Put(ctx, []byte("alice"), []byte(`{"age":30}`))
//
// Endpoints and retries: give every node; any node serves, forwarding writes to the leader.
// A call that fails moves to the next endpoint and is retried only when that is safe, by the
// same rules as the Rust SDK: reads on any unavailability; writes only when the server said
// nothing was done (not_leader, leader_unreachable) or the connection could not be made;
// idempotent writes (a publish with a message id, a registration) also after an unknown
// outcome. A write that fails with ErrOutcomeUnknown may or may not have been applied.
package strata

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	authpb "github.com/strata-db/strata/sdk/go/gen/strata/auth/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// NamespaceHeader is the request metadata key naming the namespace to act on.
const NamespaceHeader = "x-strata-namespace"

// MaxMessageBytes is the largest message the client sends or accepts (the server's limit).
const MaxMessageBytes = 16 << 20

// RetryPolicy bounds retries: Attempts in all (the first included), waiting Backoff before
// the first retry and doubling up to MaxBackoff.
type RetryPolicy struct {
	Attempts   int
	Backoff    time.Duration
	MaxBackoff time.Duration
}

// DefaultRetryPolicy is the Rust SDK's default: 8 attempts, 25 ms doubling to 800 ms.
var DefaultRetryPolicy = RetryPolicy{Attempts: 8, Backoff: 25 * time.Millisecond, MaxBackoff: 800 * time.Millisecond}

// NoRetries sends every error straight to the caller.
var NoRetries = RetryPolicy{Attempts: 1}

func (p RetryPolicy) delay(retry int) time.Duration {
	d := p.Backoff
	for i := 0; i < retry && d < p.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, p.MaxBackoff)
}

type options struct {
	namespace      string
	token          string
	credentials    *login
	ca             []byte
	certPEM        []byte
	keyPEM         []byte
	serverName     string
	requestTimeout time.Duration
	retry          RetryPolicy
}

// Option configures Connect.
type Option func(*options)

// WithNamespace acts on namespace ns (default: the token's namespace, or "default" where the
// server runs without auth). Another than the token's needs a super-tenant admin.
func WithNamespace(ns string) Option { return func(o *options) { o.namespace = ns } }

// WithToken sends `authorization: Bearer <token>` on every call (`strata login` prints one).
func WithToken(token string) Option { return func(o *options) { o.token = token } }

// WithCredentials logs in as account id of namespace with secret when connecting, and keeps
// the access token fresh (renewed at four fifths of its life) until Close.
func WithCredentials(namespace, id, secret string) Option {
	return func(o *options) { o.credentials = &login{namespace: namespace, id: id, secret: secret} }
}

// WithTLS connects with TLS, trusting nodes whose certificate the CA (PEM) signed.
func WithTLS(caPEM []byte) Option { return func(o *options) { o.ca = caPEM } }

// WithServerName checks the nodes' certificates for this name instead of the dialled host.
func WithServerName(name string) Option { return func(o *options) { o.serverName = name } }

// WithClientCertificate presents a certificate (PEM) to nodes that require one.
func WithClientCertificate(certPEM, keyPEM []byte) Option {
	return func(o *options) { o.certPEM, o.keyPEM = certPEM, keyPEM }
}

// WithRequestTimeout bounds each attempt of a unary call, and the wait for an ack's
// confirmation (default: none for calls, 30 s for acks).
func WithRequestTimeout(d time.Duration) Option { return func(o *options) { o.requestTimeout = d } }

// WithRetryPolicy replaces DefaultRetryPolicy.
func WithRetryPolicy(p RetryPolicy) Option { return func(o *options) { o.retry = p } }

type endpoint struct {
	name string
	conn *grpc.ClientConn
}

// shared is what every namespace view of one connection shares.
type shared struct {
	endpoints []endpoint
	preferred atomic.Uint64
	opts      options
	// authorization is the current "Bearer <token>", or "".
	authorization atomic.Value
	closed        chan struct{}
	closeOnce     sync.Once
}

// Client is a connection to a Strata cluster, bound to one namespace. Safe for concurrent
// use; InNamespace gives views of other namespaces over the same connections.
type Client struct {
	*shared
	namespace string
}

// Connect makes a client of the given nodes ("host:port", or several comma-separated in one
// string). Connections are made lazily, except that WithCredentials logs in at once.
func Connect(endpoints []string, opts ...Option) (*Client, error) {
	o := options{retry: DefaultRetryPolicy}
	for _, opt := range opts {
		opt(&o)
	}
	if o.retry.Attempts < 1 {
		o.retry.Attempts = 1
	}
	var names []string
	for _, e := range endpoints {
		for _, part := range strings.Split(e, ",") {
			if part = strings.TrimSpace(part); part != "" {
				names = append(names, part)
			}
		}
	}
	if len(names) == 0 {
		return nil, &Error{Kind: ErrInvalidArgument, Message: "no endpoint given"}
	}
	transport, err := o.transport()
	if err != nil {
		return nil, err
	}
	s := &shared{opts: o, closed: make(chan struct{})}
	s.authorization.Store("")
	if o.token != "" {
		s.authorization.Store("Bearer " + o.token)
	}
	for _, name := range names {
		conn, err := grpc.NewClient(name,
			grpc.WithTransportCredentials(transport),
			grpc.WithDefaultCallOptions(
				grpc.MaxCallRecvMsgSize(MaxMessageBytes),
				grpc.MaxCallSendMsgSize(MaxMessageBytes)))
		if err != nil {
			s.close()
			return nil, &Error{Kind: ErrInvalidArgument, Message: fmt.Sprintf("endpoint %q: %v", name, err)}
		}
		s.endpoints = append(s.endpoints, endpoint{name: name, conn: conn})
	}
	c := &Client{shared: s, namespace: o.namespace}
	if o.credentials != nil {
		token, err := c.login(o.credentials, "")
		if err != nil {
			s.close()
			return nil, err
		}
		s.authorization.Store("Bearer " + token.GetAccessToken())
		go c.keepFresh(o.credentials, token)
	}
	return c, nil
}

func (o *options) transport() (credentials.TransportCredentials, error) {
	if o.ca == nil {
		return insecure.NewCredentials(), nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(o.ca) {
		return nil, &Error{Kind: ErrInvalidArgument, Message: "the CA is not PEM certificates"}
	}
	config := &tls.Config{RootCAs: pool, ServerName: o.serverName, MinVersion: tls.VersionTLS12}
	if o.certPEM != nil {
		pair, err := tls.X509KeyPair(o.certPEM, o.keyPEM)
		if err != nil {
			return nil, &Error{Kind: ErrInvalidArgument, Message: fmt.Sprintf("client certificate: %v", err)}
		}
		config.Certificates = []tls.Certificate{pair}
	}
	return credentials.NewTLS(config), nil
}

// InNamespace is a view of the same connections acting on namespace ns.
func (c *Client) InNamespace(ns string) *Client {
	return &Client{shared: c.shared, namespace: ns}
}

// Namespace is the namespace this client names ("" for the token's own).
func (c *Client) Namespace() string { return c.namespace }

// Close closes every connection; calls in flight fail.
func (c *Client) Close() error {
	c.close()
	return nil
}

func (s *shared) close() {
	s.closeOnce.Do(func() {
		close(s.closed)
		for _, e := range s.endpoints {
			_ = e.conn.Close()
		}
	})
}

// outgoing adds the namespace and token to a call's context.
func (c *Client) outgoing(ctx context.Context) context.Context {
	kv := make([]string, 0, 4)
	if c.namespace != "" {
		kv = append(kv, NamespaceHeader, c.namespace)
	}
	if a := c.authorization.Load().(string); a != "" {
		kv = append(kv, "authorization", a)
	}
	if len(kv) == 0 {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

// current is the preferred endpoint and its index.
func (s *shared) current() (int, endpoint) {
	i := int(s.preferred.Load() % uint64(len(s.endpoints)))
	return i, s.endpoints[i]
}

// moveOn prefers the endpoint after index from now on, unless another caller already did.
func (s *shared) moveOn(index int) {
	if len(s.endpoints) > 1 {
		s.preferred.CompareAndSwap(uint64(index), uint64((index+1)%len(s.endpoints)))
	}
}

// rpc is one attempt of a unary call on a connection.
type rpc[T any] func(ctx context.Context, conn grpc.ClientConnInterface, opts ...grpc.CallOption) (T, error)

// invoke runs a unary call with failover and the retries its safety allows.
func invoke[T any](ctx context.Context, c *Client, s safety, call rpc[T]) (T, error) {
	var zero T
	for retry := 0; ; retry++ {
		select {
		case <-c.closed:
			return zero, &Error{Kind: ErrClosed, Message: "the client is closed"}
		default:
		}
		index, e := c.current()
		attempt := c.outgoing(ctx)
		cancel := func() {}
		if c.opts.requestTimeout > 0 {
			attempt, cancel = context.WithTimeout(attempt, c.opts.requestTimeout)
		}
		var trailer metadata.MD
		response, err := call(attempt, e.conn, grpc.Trailer(&trailer))
		cancel()
		if err == nil {
			return response, nil
		}
		f := failure{status: status.Convert(err), md: trailer, ctxErr: ctx.Err()}
		if retry+1 >= c.opts.retry.Attempts || !retryable(f, s) {
			return zero, finalError(f, s, e.name)
		}
		c.moveOn(index)
		select {
		case <-time.After(c.opts.retry.delay(retry)):
		case <-ctx.Done():
			return zero, finalError(failure{status: f.status, md: f.md, ctxErr: ctx.Err()}, s, e.name)
		}
	}
}

// login is an account to log in as.
type login struct {
	namespace, id, secret string
}

// loginPatience is how long a login keeps trying while every node is unavailable (a cluster
// still electing a leader).
const loginPatience = 10 * time.Second

// login exchanges the refresh token when given, else the id and secret, for a token: on each
// endpoint in turn, with backoff while all are unavailable.
func (c *Client) login(l *login, refresh string) (*authpb.Token, error) {
	ctx, cancel := context.WithTimeout(context.Background(), loginPatience)
	defer cancel()
	request := &authpb.TokenRequest{Id: l.id, Secret: l.secret, Namespace: l.namespace}
	if refresh != "" {
		request = &authpb.TokenRequest{RefreshToken: refresh}
	}
	backoff := 50 * time.Millisecond
	for {
		var last error
		for _, e := range c.endpoints {
			var trailer metadata.MD
			response, err := authpb.NewAuthClient(e.conn).Token(ctx, request, grpc.Trailer(&trailer))
			if err == nil {
				if response.GetToken().GetAccessToken() == "" {
					return nil, &Error{Kind: ErrUnauthenticated, Message: "no token in the answer", Endpoint: e.name}
				}
				return response.GetToken(), nil
			}
			last = fromStatus(status.Convert(err), trailer, e.name)
			if !errors.Is(last, ErrUnavailable) {
				return nil, last // wrong credentials are wrong everywhere
			}
		}
		select {
		case <-time.After(backoff):
			backoff = min(backoff*2, time.Second)
		case <-ctx.Done():
			return nil, last
		}
	}
}

// keepFresh renews the access token at four fifths of its life until the client closes.
func (c *Client) keepFresh(l *login, token *authpb.Token) {
	for {
		left := time.Until(time.Unix(token.GetExpiry(), 0))
		wait := max(left*4/5, time.Second)
		select {
		case <-c.closed:
			return
		case <-time.After(wait):
		}
		renewed, err := c.login(l, token.GetRefreshToken())
		if err != nil {
			renewed, err = c.login(l, "") // an ended refresh token (a changed secret)
		}
		if err != nil {
			token = &authpb.Token{Expiry: time.Now().Add(2 * time.Second).Unix()}
			continue
		}
		c.authorization.Store("Bearer " + renewed.GetAccessToken())
		token = renewed
	}
}

// Endpoints are the nodes the client was given, in order.
func (c *Client) Endpoints() []string {
	out := make([]string, 0, len(c.endpoints))
	for _, e := range c.endpoints {
		out = append(out, e.name)
	}
	return out
}

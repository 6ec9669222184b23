package strata_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	authpb "github.com/strata-db/strata/sdk/go/gen/strata/auth/v1"
	"github.com/strata-db/strata/sdk/go/strata"
	"github.com/strata-db/strata/sdk/go/stratatest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
)

// A node with TLS and auth on, as a cluster runs: the SDK connects over TLS with a token or
// with credentials it logs in with; identity comes from the token, so a tenant cannot reach
// another namespace whatever it names.
func TestTLSTokensAndTenants(t *testing.T) {
	node, ca := stratatest.StartSecure(t)
	ns, id, secret := node.RootCredentials()
	ctx := deadline(t)

	root := connect(t, []string{node.GRPC}, strata.WithTLS(ca), strata.WithCredentials(ns, id, secret))
	if _, err := root.Table("", "").Put(ctx, []byte("k"), []byte("v")); err != nil {
		t.Fatalf("root over TLS: %v", err)
	}

	// A tenant account, made by root in namespace acme.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	conn, err := grpc.NewClient(node.GRPC, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	auth := authpb.NewAuthClient(conn)
	login, err := auth.Token(ctx, &authpb.TokenRequest{Id: id, Secret: secret, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	asRoot := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+login.GetToken().GetAccessToken(), strata.NamespaceHeader, "acme")
	made, err := auth.Generate(asRoot, &authpb.GenerateRequest{Id: "billing", Type: "service", Scopes: []string{"service"}})
	if err != nil {
		t.Fatal(err)
	}
	tenant := connect(t, []string{node.GRPC}, strata.WithTLS(ca), strata.WithCredentials("acme", "billing", made.GetAccount().GetSecret()))
	if _, err := tenant.Table("app", "t").Put(ctx, []byte("k"), []byte("acme's")); err != nil {
		t.Fatalf("a tenant in its own namespace: %v", err)
	}
	if _, err := tenant.InNamespace("other").Table("app", "t").Put(ctx, []byte("k"), []byte("x")); !errors.Is(err, strata.ErrPermissionDenied) {
		t.Fatalf("a tenant naming another namespace: got %v", err)
	}
	// Root sees acme's record in acme, and nothing of it in its own namespace.
	if r, err := root.InNamespace("acme").Table("app", "t").Get(ctx, []byte("k")); err != nil || string(r.GetValue()) != "acme's" {
		t.Fatalf("root reading acme: %v %v", r, err)
	}

	// A token as is; a bad one and none are refused.
	withToken := connect(t, []string{node.GRPC}, strata.WithTLS(ca), strata.WithToken(login.GetToken().GetAccessToken()))
	if _, err := withToken.Table("", "").Get(ctx, []byte("k")); err != nil {
		t.Fatalf("with a token: %v", err)
	}
	bad := connect(t, []string{node.GRPC}, strata.WithTLS(ca), strata.WithToken("not-a-token"))
	if _, err := bad.Table("", "").Get(ctx, []byte("k")); !errors.Is(err, strata.ErrUnauthenticated) {
		t.Fatalf("a bad token: got %v", err)
	}
	if _, err := strata.Connect([]string{node.GRPC}, strata.WithTLS(ca), strata.WithCredentials(ns, id, "wrong")); !errors.Is(err, strata.ErrUnauthenticated) {
		t.Fatalf("a wrong secret: got %v", err)
	}

	// Plaintext against a TLS port fails; it never reaches the handler.
	plain := connect(t, []string{node.GRPC}, strata.WithToken("x"), strata.WithRetryPolicy(strata.NoRetries))
	short, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := plain.Table("", "").Get(short, []byte("k")); err == nil {
		t.Fatal("a plaintext client got an answer from a TLS port")
	}
}

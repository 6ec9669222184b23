package strata_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	kvpb "github.com/strata-db/strata/sdk/go/gen/strata/kv/v1"
	regpb "github.com/strata-db/strata/sdk/go/gen/strata/registry/v1"
	"github.com/strata-db/strata/sdk/go/strata"
	"github.com/strata-db/strata/sdk/go/stratatest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

func connect(t *testing.T, endpoints []string, opts ...strata.Option) *strata.Client {
	t.Helper()
	c, err := strata.Connect(endpoints, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func deadline(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestKeyValueAgainstANode(t *testing.T) {
	node := stratatest.Start(t)
	c := connect(t, []string{node.GRPC}, strata.WithNamespace("acme"))
	ctx := deadline(t)
	users := c.Table("app", "users")

	put, err := users.Put(ctx, []byte("alice"), []byte(`{"age":30}`), strata.WithMetadata(map[string]string{"kind": "user"}))
	if err != nil {
		t.Fatal(err)
	}
	record, err := users.Get(ctx, []byte("alice"))
	if err != nil || record == nil {
		t.Fatalf("get: %v %v", record, err)
	}
	if record.GetModRevision() != put.Revision || string(record.GetValue()) != `{"age":30}` || record.GetMetadata()["kind"] != "user" {
		t.Fatalf("read back %v after put at %d", record, put.Revision)
	}
	if missing, err := users.Get(ctx, []byte("nobody")); err != nil || missing != nil {
		t.Fatalf("an absent key reads as nil, nil; got %v %v", missing, err)
	}

	// Compare-and-swap: a stale revision is refused with the current one, and changes nothing.
	_, err = users.Put(ctx, []byte("alice"), []byte("stale"), strata.IfModRevision(put.Revision-1))
	var failed *strata.Error
	if !errors.As(err, &failed) || !errors.Is(err, strata.ErrPreconditionFailed) || failed.Revision != put.Revision {
		t.Fatalf("a stale CAS: got %v", err)
	}
	if _, err := users.Put(ctx, []byte("alice"), []byte("x"), strata.CreateOnly()); !errors.Is(err, strata.ErrAlreadyExists) {
		t.Fatalf("create-only over a key: got %v", err)
	}
	swapped, err := users.Put(ctx, []byte("alice"), []byte(`{"age":31}`), strata.IfModRevision(put.Revision))
	if err != nil || swapped.Version != 2 {
		t.Fatalf("a current CAS: %v %v", swapped, err)
	}

	// Watch from the revision after the first put sees the swap, then later writes, in order.
	watch, err := users.Watch(ctx, []byte("a"), true, put.Revision+1)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	for i := 0; i < 3; i++ {
		if _, err := users.Put(ctx, []byte(fmt.Sprintf("a%d", i)), []byte("v"), strata.WithTTL(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	var seen []string
	for len(seen) < 4 {
		response, err := watch.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range response.GetEvents() {
			seen = append(seen, string(e.GetRecord().GetKey()))
		}
	}
	if strings.Join(seen, ",") != "alice,a0,a1,a2" {
		t.Fatalf("watch saw %v", seen)
	}

	// Lists page, in order, by prefix.
	page, err := users.List(ctx, strata.List{Prefix: []byte("a"), Limit: 2})
	if err != nil || len(page.Records) != 2 || page.NextPageToken == "" {
		t.Fatalf("first page: %v %v", page, err)
	}
	all, err := users.ListAll(ctx, strata.List{Prefix: []byte("a"), Limit: 2, KeysOnly: true})
	if err != nil || len(all) != 4 || string(all[0].GetKey()) != "a0" || string(all[3].GetKey()) != "alice" {
		t.Fatalf("all pages: %v %v", all, err)
	}

	// A transaction applies one branch atomically.
	txn, err := users.Txn(ctx, strata.Txn{
		If:   []*kvpb.Compare{strata.Exists([]byte("bob"), false)},
		Then: []*kvpb.TxnOp{strata.OpPut([]byte("bob"), []byte("new")), strata.OpDelete([]byte("a0"))},
		Else: []*kvpb.TxnOp{strata.OpGet([]byte("bob"))},
	})
	if err != nil || !txn.GetSucceeded() {
		t.Fatalf("txn: %v %v", txn, err)
	}
	if gone, _ := users.Get(ctx, []byte("a0")); gone != nil {
		t.Fatal("the transaction's delete did not apply")
	}
	deleted, err := users.DeletePrefix(ctx, []byte("a"))
	if err != nil || deleted != 3 {
		t.Fatalf("delete prefix: %d %v", deleted, err)
	}
	dbs, err := c.Databases(ctx)
	if err != nil || len(dbs) != 1 || dbs[0] != "app" {
		t.Fatalf("databases: %v %v", dbs, err)
	}

	// Bad input is a typed error.
	if _, err := users.Put(ctx, nil, []byte("v")); !errors.Is(err, strata.ErrInvalidArgument) {
		t.Fatalf("an empty key: got %v", err)
	}
}

func TestStreamsAgainstANode(t *testing.T) {
	node := stratatest.Start(t)
	c := connect(t, []string{node.GRPC})
	ctx := deadline(t)
	orders := c.Topic("orders")

	first, err := orders.Publish(ctx, strata.Message{Payload: []byte("one"), ID: "order-1"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := orders.Publish(ctx, strata.Message{Payload: []byte("one"), ID: "order-1"})
	if err != nil || !again.Duplicate || again.Sequence != first.Sequence {
		t.Fatalf("a repeated id: %+v %v (first %+v)", again, err, first)
	}
	if _, err := orders.PublishBatch(ctx, []strata.Message{{Payload: []byte("two")}, {Payload: []byte("three")}}); err != nil {
		t.Fatal(err)
	}

	// A group of two shares the messages; a nack brings one back; acks are confirmed.
	subscribe := func() *strata.Subscription {
		s, err := orders.Subscribe(ctx, strata.SubscribeOptions{Group: "billing", Start: strata.Earliest(), AckWait: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	a, b := subscribe(), subscribe()
	got := map[string]int{}
	nacked := false
	deliveries := make(chan *strata.Delivery, 16)
	for _, s := range []*strata.Subscription{a, b} {
		go func(s *strata.Subscription) {
			for {
				d, err := s.Next(ctx)
				if err != nil {
					return
				}
				deliveries <- d
			}
		}(s)
	}
	for len(got) < 3 {
		var d *strata.Delivery
		select {
		case d = <-deliveries:
		case <-ctx.Done():
			t.Fatalf("only %v arrived", got)
		}
		if string(d.GetPayload()) == "two" && !nacked {
			nacked = true
			if err := d.Nack(ctx, 0); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
		got[string(d.GetPayload())]++
		if d.GetPayload() != nil && string(d.GetPayload()) == "two" && d.GetDeliveryCount() < 2 {
			t.Fatalf("the nacked message came back with delivery count %d", d.GetDeliveryCount())
		}
	}
	if got["one"] != 1 || got["two"] != 1 || got["three"] != 1 {
		t.Fatalf("the group got %v", got)
	}
	info, err := orders.Info(ctx)
	if err != nil || len(info.GetGroups()) != 1 || info.GetGroups()[0].GetPending() != 0 {
		t.Fatalf("info: %v %v", info, err)
	}
	read, err := orders.Read(ctx, strata.AtSequence(first.Sequence), 10)
	if err != nil || len(read.GetMessages()) != 3 {
		t.Fatalf("read: %v %v", read, err)
	}
}

func TestRegistryAndConfigAgainstANode(t *testing.T) {
	node := stratatest.Start(t)
	c := connect(t, []string{node.GRPC}, strata.WithNamespace("shop"))
	ctx := deadline(t)
	registry := c.Registry()

	watch, err := registry.Watch(ctx, strata.RegistryWatchOptions{Service: "cart"})
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	service := &strata.Service{Name: "cart", Version: "1.0", Nodes: []*regpb.Node{{Id: "cart-1", Address: "10.0.0.1:9000"}}}
	kept, err := registry.KeepRegistered(ctx, service, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// Kept alive past several TTLs.
	time.Sleep(5 * time.Second)
	found, err := registry.GetService(ctx, "cart", regpb.Consistency_CONSISTENCY_LINEARIZABLE)
	if err != nil || len(found) != 1 || len(found[0].GetNodes()) != 1 || kept.LastError() != nil {
		t.Fatalf("get after keepalive: %v %v %v", found, err, kept.LastError())
	}
	listed, err := registry.ListServices(ctx, regpb.Consistency_CONSISTENCY_SERIALIZABLE)
	if err != nil || len(listed) != 1 {
		t.Fatalf("list: %v %v", listed, err)
	}
	// Stopped, it expires, and the watch says so.
	kept.Stop()
	var types []regpb.Event_Type
	for len(types) < 2 {
		response, err := watch.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range response.GetEvents() {
			if e.GetType() != regpb.Event_TYPE_UPDATE {
				types = append(types, e.GetType())
			}
			if e.GetType() == regpb.Event_TYPE_DELETE && !e.GetExpired() {
				t.Fatalf("the delete was not an expiry: %v", e)
			}
		}
	}
	if types[0] != regpb.Event_TYPE_CREATE || types[1] != regpb.Event_TYPE_DELETE {
		t.Fatalf("watch saw %v", types)
	}
	if _, err := registry.GetService(ctx, "cart", 0); !errors.Is(err, strata.ErrNotFound) {
		t.Fatalf("an expired service: got %v", err)
	}

	config := c.Config()
	cw, err := config.Watch(ctx, "app", "db.host", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	defer cw.Close()
	if _, err := config.Set(ctx, "app", "db", `{"host":"a","port":5432}`, false); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Set(ctx, "app", "db.password", `"hunter2"`, true); err != nil {
		t.Fatal(err)
	}
	value, _, err := config.Get(ctx, "app", "db.password", false)
	if err != nil || value != `"[secret]"` {
		t.Fatalf("a secret read without secrets: %q %v", value, err)
	}
	value, _, err = config.Get(ctx, "app", "db.password", true)
	if err != nil || value != `"hunter2"` {
		t.Fatalf("a secret read with secrets: %q %v", value, err)
	}
	for {
		change, err := cw.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if change.GetChanged() {
			if change.GetNewValue() != `"a"` {
				t.Fatalf("config watch: %v", change)
			}
			break
		}
	}
	keys, err := config.Keys(ctx, "")
	if err != nil || len(keys) != 1 || keys[0] != "app" {
		t.Fatalf("keys: %v %v", keys, err)
	}
}

// Failover: with the leader killed, reads, writes and an open subscription and watch go on on
// the other nodes, and nothing acknowledged is lost. The first endpoint is dead from the
// start: a write to it is refused by the connection (nothing sent) and retried.
func TestFailoverAcrossEndpoints(t *testing.T) {
	cluster := stratatest.StartCluster(t, 3)
	ctx := deadline(t)
	dead := "127.0.0.1:1"
	c := connect(t, append([]string{dead}, cluster.Endpoints()...), strata.WithRequestTimeout(10*time.Second))
	table := c.Table("", "")
	acked := map[string]bool{}
	for i := 0; i < 20; i++ {
		key := fmt.Sprintf("k%02d", i)
		if _, err := table.Put(ctx, []byte(key), []byte("v")); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
		acked[key] = true
	}
	topic := c.Topic("events")
	sub, err := topic.Subscribe(ctx, strata.SubscribeOptions{Group: "g", Start: strata.Earliest(), Heartbeat: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	watch, err := table.Watch(ctx, []byte("k"), true, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()

	leader := cluster.WaitForLeader(30 * time.Second)
	cluster.Node(leader).Kill()
	for i := 20; i < 40; i++ {
		key := fmt.Sprintf("k%02d", i)
		_, err := table.Put(ctx, []byte(key), []byte("v"))
		if errors.Is(err, strata.ErrOutcomeUnknown) {
			continue // may or may not be there: not counted as acknowledged
		}
		if err != nil {
			t.Fatalf("put %s after the leader died: %v", key, err)
		}
		acked[key] = true
	}
	for i := 0; i < 5; i++ {
		if _, err := topic.Publish(ctx, strata.Message{Payload: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatalf("publish after the leader died: %v", err)
		}
	}
	all, err := table.ListAll(ctx, strata.List{Prefix: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	present := map[string]bool{}
	for _, r := range all {
		present[string(r.GetKey())] = true
	}
	for key := range acked {
		if !present[key] {
			t.Fatalf("acknowledged key %s is lost", key)
		}
	}
	// The subscription moved to a live node and delivers what was published after the kill.
	seen := map[string]bool{}
	for len(seen) < 5 {
		d, err := sub.Next(ctx)
		if err != nil {
			t.Fatalf("subscription after failover: %v", err)
		}
		seen[string(d.GetPayload())] = true
		if err := d.Ack(ctx); err != nil && !errors.Is(err, strata.ErrOutcomeUnknown) {
			t.Fatal(err)
		}
	}
	// The watch resumed without a gap or a repeat: every acknowledged key once.
	watched := map[string]int{}
	for len(watched) < len(acked) {
		response, err := watch.Next(ctx)
		if err != nil {
			t.Fatalf("watch after failover: %v", err)
		}
		for _, e := range response.GetEvents() {
			watched[string(e.GetRecord().GetKey())]++
		}
	}
	for key, n := range watched {
		if n != 1 {
			t.Fatalf("the watch saw %s %d times", key, n)
		}
	}
}

// A TTL of 0 is a permanent registration, asked for explicitly on the wire; the server
// refuses a permanent one with a TTL, and a TTL of 0 without permanent.
func TestPermanentRegistrations(t *testing.T) {
	node := stratatest.Start(t)
	c := connect(t, []string{node.GRPC})
	ctx := deadline(t)
	svc := &strata.Service{Name: "db", Nodes: []*regpb.Node{{Id: "db-1", Address: "10.0.0.9:5432"}}}
	if _, err := c.Registry().Register(ctx, svc, 0); err != nil {
		t.Fatal(err)
	}
	found, err := c.Registry().GetService(ctx, "db", 0)
	if err != nil || len(found) != 1 || found[0].GetTtlSeconds() != 0 {
		t.Fatalf("a permanent service: %v %v", found, err)
	}
	conn, err := grpc.NewClient(node.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	raw := regpb.NewRegistryClient(conn)
	for _, bad := range []*regpb.RegisterRequest{
		{Service: svc, TtlSeconds: 30, Permanent: true},
		{Service: svc, TtlSeconds: 0},
	} {
		if _, err := raw.Register(ctx, bad); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("%v: got %v", bad, err)
		}
	}
}

// A registry of more than one page (10,000 nodes) lists whole: the SDK follows the pages.
func TestListServicesFollowsPages(t *testing.T) {
	node := stratatest.Start(t)
	c := connect(t, []string{node.GRPC})
	ctx := deadline(t)
	sizes := map[string]int{"alpha": 6000, "beta": 4000, "gamma": 1}
	for name, size := range sizes {
		svc := &strata.Service{Name: name, Version: "1"}
		for i := 0; i < size; i++ {
			svc.Nodes = append(svc.Nodes, &regpb.Node{Id: fmt.Sprintf("%s-%d", name, i), Address: fmt.Sprintf("10.0.%d.%d:80", i/250, i%250)})
		}
		if _, err := c.Registry().Register(ctx, svc, 0); err != nil {
			t.Fatal(err)
		}
	}
	listed, err := c.Registry().ListServices(ctx, regpb.Consistency_CONSISTENCY_LINEARIZABLE)
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != len(sizes) {
		t.Fatalf("listed %d services, want %d", len(listed), len(sizes))
	}
	for _, svc := range listed {
		if len(svc.GetNodes()) != sizes[svc.GetName()] {
			t.Fatalf("%s: %d nodes, want %d", svc.GetName(), len(svc.GetNodes()), sizes[svc.GetName()])
		}
	}
}

// A revision too large for one response comes in fragments; the SDK delivers it whole.
func TestALargeRevisionArrivesWhole(t *testing.T) {
	node := stratatest.Start(t)
	c := connect(t, []string{node.GRPC})
	ctx := deadline(t)
	table := c.Table("", "")
	watch, err := table.Watch(ctx, []byte("big/"), true, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	var txn strata.Txn
	for i := 0; i < 24; i++ {
		txn.Then = append(txn.Then, strata.OpPut([]byte(fmt.Sprintf("big/%02d", i)), make([]byte, 64<<10)))
	}
	done, err := table.Txn(ctx, txn)
	if err != nil {
		t.Fatal(err)
	}
	for {
		response, err := watch.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(response.GetEvents()) == 0 {
			continue
		}
		if response.GetRevision() != done.GetRevision() || len(response.GetEvents()) != 24 || response.GetFragment() {
			t.Fatalf("revision %d with %d events (fragment %v), want %d with 24", response.GetRevision(), len(response.GetEvents()), response.GetFragment(), done.GetRevision())
		}
		return
	}
}

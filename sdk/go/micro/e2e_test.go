package micro_test

// End to end with Micro v3's own code: a Micro gRPC server and client, Micro's registry-based
// router, its broker pub/sub, and the store, events and config interfaces, all on the Strata
// plugins, against a three-node Strata cluster started here; then the Strata leader is killed
// and everything must still work, with nothing acknowledged lost.

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/micro/micro/v3/service/broker"
	"github.com/micro/micro/v3/service/client"
	grpcclient "github.com/micro/micro/v3/service/client/grpc"
	"github.com/micro/micro/v3/service/config"
	"github.com/micro/micro/v3/service/events"
	"github.com/micro/micro/v3/service/registry"
	"github.com/micro/micro/v3/service/router"
	regrouter "github.com/micro/micro/v3/service/router/registry"
	"github.com/micro/micro/v3/service/server"
	grpcserver "github.com/micro/micro/v3/service/server/grpc"
	"github.com/micro/micro/v3/service/store"
	"google.golang.org/protobuf/types/known/wrapperspb"

	strataBroker "github.com/strata-db/strata/sdk/go/micro/broker"
	strataConfig "github.com/strata-db/strata/sdk/go/micro/config"
	strataEvents "github.com/strata-db/strata/sdk/go/micro/events"
	strataRegistry "github.com/strata-db/strata/sdk/go/micro/registry"
	strataStore "github.com/strata-db/strata/sdk/go/micro/store"
	"github.com/strata-db/strata/sdk/go/strata"
	"github.com/strata-db/strata/sdk/go/stratatest"
)

// Greeter is a Micro handler.
type Greeter struct{ name string }

func (g *Greeter) Hello(ctx context.Context, req *wrapperspb.StringValue, rsp *wrapperspb.StringValue) error {
	rsp.Value = fmt.Sprintf("hello %s from %s", req.GetValue(), g.name)
	return nil
}

// platform is the plugins over one Strata client, as a Micro deployment would set them.
type platform struct {
	registry registry.Registry
	store    store.Store
	stream   *strataEvents.Stream
	broker   broker.Broker
}

func startService(t *testing.T, p platform, name, id string) server.Server {
	t.Helper()
	srv := grpcserver.NewServer(
		server.Name(name), server.Id(id), server.Address("127.0.0.1:0"),
		server.Registry(p.registry), server.Broker(p.broker),
		server.RegisterTTL(10*time.Second), server.RegisterInterval(2*time.Second),
	)
	if err := srv.Handle(srv.NewHandler(&Greeter{name: id})); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("starting Micro server %s: %v", id, err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	return srv
}

func newClient(p platform) client.Client {
	return grpcclient.NewClient(
		client.Registry(p.registry), client.Broker(p.broker),
		client.Router(regrouter.NewRouter(router.Registry(p.registry))),
		client.RequestTimeout(20*time.Second), client.Retries(3),
	)
}

func call(t *testing.T, c client.Client, service string) string {
	t.Helper()
	var last error
	// The router learns of new nodes through its registry watch: give it a moment.
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		rsp := &wrapperspb.StringValue{}
		req := c.NewRequest(service, "Greeter.Hello", &wrapperspb.StringValue{Value: "strata"})
		if last = c.Call(context.Background(), req, rsp); last == nil {
			return rsp.GetValue()
		}
	}
	t.Fatalf("calling %s through Micro's client: %v", service, last)
	return ""
}

// consumeGroup starts n members of one group on topic, acking each event; it returns what
// each member got.
type member struct {
	mu  sync.Mutex
	ids map[string]int
}

func (m *member) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.ids)
}

func consumeGroup(t *testing.T, s events.Stream, topic, group string, n int) []*member {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var members []*member
	for i := 0; i < n; i++ {
		ch, err := s.Consume(topic, events.WithGroup(group), events.WithAutoAck(false, 5*time.Second), events.WithContext(ctx),
			events.WithOffset(time.Now().Add(-time.Hour)))
		if err != nil {
			t.Fatal(err)
		}
		m := &member{ids: map[string]int{}}
		members = append(members, m)
		go func() {
			for ev := range ch {
				var body map[string]string
				if err := ev.Unmarshal(&body); err != nil {
					t.Errorf("event %s: %v", ev.ID, err)
					continue
				}
				if err := ev.Ack(); err != nil {
					continue // unknown outcome: it may come again, and is counted then
				}
				m.mu.Lock()
				m.ids[body["n"]]++
				m.mu.Unlock()
			}
		}()
	}
	return members
}

// waitFor polls cond for up to a minute.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestMicroV3OnAStrataCluster(t *testing.T) {
	cluster := stratatest.StartCluster(t, 3)
	sc, err := strata.Connect(cluster.Endpoints(), strata.WithRequestTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sc.Close() }) // after the services' cleanups, which deregister
	p := platform{
		registry: strataRegistry.NewRegistry(sc),
		store:    strataStore.NewStore(sc, store.Database("shop"), store.Table("orders")),
		stream:   strataEvents.NewStream(sc),
		broker:   strataBroker.NewBroker(sc),
	}
	cfg := strataConfig.NewConfig(sc, "")

	// A service registers; a second program finds and calls it by name through Micro's client.
	startService(t, p, "greeter", "greeter-1")
	micro := newClient(p)
	if got := call(t, micro, "greeter"); got != "hello strata from greeter-1" {
		t.Fatalf("call: %q", got)
	}
	services, err := p.registry.GetService("greeter")
	if err != nil || len(services) != 1 || services[0].Nodes[0].Metadata["domain"] != registry.DefaultDomain {
		t.Fatalf("GetService: %v %v", services, err)
	}

	// Micro's broker pub/sub between the services, through Strata.
	var brokered sync.Map
	sub, err := p.broker.Subscribe("greetings", func(m *broker.Message) error {
		brokered.Store(string(m.Body), true)
		return nil
	}, broker.Queue("greeters"))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := micro.Publish(context.Background(), micro.NewMessage("greetings", &wrapperspb.StringValue{Value: "hi"})); err != nil {
		t.Fatalf("Micro client publish: %v", err)
	}
	waitFor(t, "the brokered message", func() bool {
		n := 0
		brokered.Range(func(_, _ any) bool { n++; return true })
		return n == 1
	})

	// Records through Micro's store interface.
	acked := map[string]string{}
	store.DefaultStore = p.store // Micro's package functions go through the plugin from here
	for i := 0; i < 20; i++ {
		key := fmt.Sprintf("order-%02d", i)
		if err := store.Write(&store.Record{Key: key, Value: []byte(strconv.Itoa(i)), Metadata: map[string]interface{}{"n": i}}); err != nil {
			t.Fatal(err)
		}
		acked[key] = strconv.Itoa(i)
	}
	records, err := store.Read("order-1", store.ReadPrefix(), store.ReadLimit(5), store.ReadOffset(2))
	if err != nil || len(records) != 5 || records[0].Key != "order-12" || records[0].Metadata["n"] != "12" {
		t.Fatalf("prefix read: %v %v", records, err)
	}

	// Events published by one service are consumed by a group of two, each event once.
	events.DefaultStream = p.stream
	members := consumeGroup(t, p.stream, "orders", "billing", 2)
	published := 0
	for i := 0; i < 40; i++ {
		if err := events.Publish("orders", map[string]string{"n": strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
		published++
	}
	total := func() int { return members[0].count() + members[1].count() }
	waitFor(t, "the group to consume every event", func() bool { return total() >= published })
	t.Logf("before failover the group's members took %d and %d events", members[0].count(), members[1].count())

	// Config through Micro's interface, secrets sealed.
	if err := cfg.Set("shop.currency", "EUR"); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Set("shop.key", "s3cr3t", config.Secret(true)); err != nil {
		t.Fatal(err)
	}
	if v, err := cfg.Get("shop.currency"); err != nil || v.String("") != "EUR" {
		t.Fatalf("config get: %v %v", v, err)
	}
	if v, _ := cfg.Get("shop.key"); v.String("") == "s3cr3t" {
		t.Fatal("a secret read without Secret(true) came back in clear")
	}

	// Kill the Strata leader.
	leader := cluster.WaitForLeader(30 * time.Second)
	cluster.Node(leader).Kill()
	t.Logf("killed Strata's leader, node %d", leader)

	// Everything still works: a new service registers and is called by name, the first is
	// still called, records are all there and new ones are written, events flow to the group,
	// config reads and writes.
	startService(t, p, "greeter-v2", "greeter-2")
	if got := call(t, micro, "greeter-v2"); got != "hello strata from greeter-2" {
		t.Fatalf("call after failover: %q", got)
	}
	if got := call(t, micro, "greeter"); got != "hello strata from greeter-1" {
		t.Fatalf("call after failover: %q", got)
	}
	for i := 20; i < 30; i++ {
		key := fmt.Sprintf("order-%02d", i)
		if err := store.Write(&store.Record{Key: key, Value: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatalf("store write after failover: %v", err)
		}
		acked[key] = strconv.Itoa(i)
	}
	for key, value := range acked {
		records, err := store.Read(key)
		if err != nil || len(records) != 1 || string(records[0].Value) != value {
			t.Fatalf("acknowledged record %s after failover: %v %v", key, records, err)
		}
	}
	for i := 40; i < 60; i++ {
		if err := events.Publish("orders", map[string]string{"n": strconv.Itoa(i)}); err != nil {
			t.Fatalf("publish after failover: %v", err)
		}
		published++
	}
	waitFor(t, "the group to consume every event after failover", func() bool {
		seen := map[string]bool{}
		for _, m := range members {
			m.mu.Lock()
			for id := range m.ids {
				seen[id] = true
			}
			m.mu.Unlock()
		}
		return len(seen) == published
	})
	t.Logf("after failover the group's members took %d and %d events", members[0].count(), members[1].count())
	// A group of two: both took a share, and no acknowledged event came twice.
	if members[0].count() == 0 || members[1].count() == 0 {
		t.Fatalf("one member of the group took nothing: %d and %d", members[0].count(), members[1].count())
	}
	consumed := map[string]int{}
	for _, m := range members {
		m.mu.Lock()
		for id, n := range m.ids {
			consumed[id] += n
		}
		m.mu.Unlock()
	}
	for id, n := range consumed {
		if n != 1 {
			t.Errorf("event %s was consumed and acked %d times", id, n)
		}
	}
	if err := micro.Publish(context.Background(), micro.NewMessage("greetings", &wrapperspb.StringValue{Value: "again"})); err != nil {
		t.Fatalf("Micro client publish after failover: %v", err)
	}
	waitFor(t, "the brokered message after failover", func() bool {
		n := 0
		brokered.Range(func(_, _ any) bool { n++; return true })
		return n == 2
	})
	if err := cfg.Set("shop.region", "eu-west"); err != nil {
		t.Fatalf("config set after failover: %v", err)
	}
	if v, err := cfg.Get("shop.currency"); err != nil || v.String("") != "EUR" {
		t.Fatalf("config get after failover: %v %v", v, err)
	}
	if v, err := cfg.Get("shop.key", config.Secret(true)); err != nil || v.String("") != "s3cr3t" {
		t.Fatalf("secret after failover: %v %v", v, err)
	}
}

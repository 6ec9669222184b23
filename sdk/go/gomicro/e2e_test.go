package gomicro_test

// End to end with go-micro v5's own code: a go-micro service registers through the Strata
// registry plugin and a second program finds and calls it by name; records go through the
// store plugin; the broker plugin carries a publish to a queue of two subscribers; go-micro's
// config loads and follows a Strata document. Then the Strata leader is killed and all of it
// still works, with nothing acknowledged lost.

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	micro "go-micro.dev/v5"
	"go-micro.dev/v5/broker"
	"go-micro.dev/v5/config"
	"go-micro.dev/v5/registry"
	"go-micro.dev/v5/server"
	"go-micro.dev/v5/store"

	strataBroker "github.com/strata-db/strata/sdk/go/gomicro/broker"
	strataConfig "github.com/strata-db/strata/sdk/go/gomicro/config"
	strataRegistry "github.com/strata-db/strata/sdk/go/gomicro/registry"
	strataStore "github.com/strata-db/strata/sdk/go/gomicro/store"
	"github.com/strata-db/strata/sdk/go/strata"
	"github.com/strata-db/strata/sdk/go/stratatest"
)

type Request struct{ Name string }
type Response struct{ Greeting string }

type Greeter struct{ id string }

func (g *Greeter) Hello(ctx context.Context, req *Request, rsp *Response) error {
	rsp.Greeting = fmt.Sprintf("hello %s from %s", req.Name, g.id)
	return nil
}

type plugins struct {
	registry registry.Registry
	broker   broker.Broker
	store    store.Store
}

func service(t *testing.T, p plugins, name, id string) micro.Service {
	t.Helper()
	svc := micro.NewService(
		micro.Server(server.NewRPCServer()), // its own server: go-micro's default is one per process
		micro.Name(name), micro.Address("127.0.0.1:0"), micro.HandleSignal(false),
		micro.Registry(p.registry), micro.Broker(p.broker), micro.Store(p.store),
		micro.RegisterTTL(10*time.Second), micro.RegisterInterval(2*time.Second),
	)
	if id != "" {
		if err := svc.Server().Handle(svc.Server().NewHandler(&Greeter{id: id})); err != nil {
			t.Fatal(err)
		}
		if err := svc.Server().Start(); err != nil {
			t.Fatalf("starting %s: %v", id, err)
		}
		t.Cleanup(func() { _ = svc.Server().Stop() })
	}
	return svc
}

func call(t *testing.T, caller micro.Service, name string) string {
	t.Helper()
	var last error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		rsp := &Response{}
		c := caller.Client()
		if last = c.Call(context.Background(), c.NewRequest(name, "Greeter.Hello", &Request{Name: "strata"}), rsp); last == nil {
			return rsp.Greeting
		}
	}
	t.Fatalf("calling %s through go-micro's client: %v", name, last)
	return ""
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestGoMicroV5OnAStrataCluster(t *testing.T) {
	cluster := stratatest.StartCluster(t, 3)
	sc, err := strata.Connect(cluster.Endpoints(), strata.WithNamespace("micro"), strata.WithRequestTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sc.Close() }) // after the services' cleanups, which deregister
	p := plugins{
		registry: strataRegistry.NewRegistry(sc),
		broker:   strataBroker.NewBroker(sc),
		store:    strataStore.NewStore(sc, store.Database("shop"), store.Table("carts")),
	}

	service(t, p, "greeter", "greeter-1")
	caller := service(t, p, "caller", "")
	if got := call(t, caller, "greeter"); got != "hello strata from greeter-1" {
		t.Fatalf("call: %q", got)
	}

	// A queue of two shares the published messages; each is handled (and acked) once.
	var mu sync.Mutex
	handled := map[string]int{}
	shares := make([]int, 2)
	for i := 0; i < 2; i++ {
		sub, err := p.broker.Subscribe("carts", func(e broker.Event) error {
			mu.Lock()
			handled[string(e.Message().Body)]++
			shares[i]++
			mu.Unlock()
			return nil
		}, broker.Queue("workers"))
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
	}
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			if err := p.broker.Publish("carts", &broker.Message{Body: []byte(strconv.Itoa(i))}); err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
		}
	}
	allHandled := func(n int) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(handled) == n
		}
	}
	publish(0, 20)
	waitFor(t, "the queue to handle every message", allHandled(20))

	acked := map[string]string{}
	write := func(from, to int) {
		for i := from; i < to; i++ {
			key := fmt.Sprintf("cart-%02d", i)
			if err := p.store.Write(&store.Record{Key: key, Value: []byte(strconv.Itoa(i))}, store.WriteTTL(time.Hour)); err != nil {
				t.Fatalf("store write: %v", err)
			}
			acked[key] = strconv.Itoa(i)
		}
	}
	write(0, 10)
	keys, err := p.store.List(store.ListPrefix("cart-0"), store.ListLimit(3), store.ListOffset(1))
	if err != nil || len(keys) != 3 || keys[0] != "cart-01" {
		t.Fatalf("list: %v %v", keys, err)
	}

	// go-micro's config over a Strata document, followed live.
	if _, err := sc.Config().Set(context.Background(), "app", "", `{"greeting":"hi"}`, false); err != nil {
		t.Fatal(err)
	}
	conf, err := config.NewConfig(config.WithSource(strataConfig.NewSource(sc, "app")))
	if err != nil {
		t.Fatal(err)
	}
	if err := conf.Load(); err != nil {
		t.Fatal(err)
	}
	if v := conf.Get("greeting"); v.String("") != "hi" {
		t.Fatalf("config: %q", v.String(""))
	}

	leader := cluster.WaitForLeader(30 * time.Second)
	cluster.Node(leader).Kill()
	t.Logf("killed Strata's leader, node %d", leader)

	service(t, p, "greeter-v2", "greeter-2")
	if got := call(t, caller, "greeter-v2"); got != "hello strata from greeter-2" {
		t.Fatalf("call after failover: %q", got)
	}
	if got := call(t, caller, "greeter"); got != "hello strata from greeter-1" {
		t.Fatalf("call after failover: %q", got)
	}
	write(10, 20)
	for key, value := range acked {
		records, err := p.store.Read(key)
		if err != nil || len(records) != 1 || string(records[0].Value) != value {
			t.Fatalf("acknowledged record %s after failover: %v %v", key, records, err)
		}
	}
	publish(20, 40)
	waitFor(t, "the queue to handle every message after failover", allHandled(40))
	if _, err := sc.Config().Set(context.Background(), "app", "greeting", `"hello"`, false); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	t.Logf("the queue's subscribers handled %d and %d messages", shares[0], shares[1])
	for body, n := range handled {
		if n != 1 {
			t.Errorf("message %s was handled %d times", body, n)
		}
	}
	if shares[0] == 0 || shares[1] == 0 {
		t.Errorf("one subscriber of the queue took nothing: %v", shares)
	}
	mu.Unlock()
	waitFor(t, "config to follow the change", func() bool {
		v := conf.Get("greeting")
		return v.String("") == "hello"
	})
}

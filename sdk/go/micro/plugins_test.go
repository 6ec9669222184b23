package micro_test

// The plugins' semantics against one node (shared/MICRO_API.md §9): registry domains, TTL
// expiry seen by a watch, store filters and order and expiry, event offsets, nacks, retry
// limits and the event store, broker fan-out, config paths.

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/micro/micro/v3/service/broker"
	"github.com/micro/micro/v3/service/events"
	"github.com/micro/micro/v3/service/registry"
	"github.com/micro/micro/v3/service/store"

	strataBroker "github.com/strata-db/strata/sdk/go/micro/broker"
	strataConfig "github.com/strata-db/strata/sdk/go/micro/config"
	strataEvents "github.com/strata-db/strata/sdk/go/micro/events"
	strataRegistry "github.com/strata-db/strata/sdk/go/micro/registry"
	strataStore "github.com/strata-db/strata/sdk/go/micro/store"
	"github.com/strata-db/strata/sdk/go/strata"
	"github.com/strata-db/strata/sdk/go/stratatest"
)

func oneNode(t *testing.T) *strata.Client {
	t.Helper()
	node := stratatest.Start(t)
	c, err := strata.Connect([]string{node.GRPC})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestRegistryDomainsTTLsAndWatchResults(t *testing.T) {
	r := strataRegistry.NewRegistry(oneNode(t))
	watcher, err := r.Watch(registry.WatchDomain("shop"))
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Stop()
	svc := &registry.Service{Name: "cart", Version: "1", Nodes: []*registry.Node{{Id: "cart-1", Address: "10.0.0.1:1"}}}
	if err := r.Register(svc, registry.RegisterDomain("shop"), registry.RegisterTTL(time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := r.Register(&registry.Service{Name: "cart", Version: "1", Nodes: []*registry.Node{{Id: "other-1", Address: "10.0.0.2:1"}}},
		registry.RegisterDomain("elsewhere")); err != nil {
		t.Fatal(err)
	}
	found, err := r.GetService("cart", registry.GetDomain("shop"))
	if err != nil || len(found) != 1 || found[0].Nodes[0].Id != "cart-1" || found[0].Metadata["domain"] != "shop" {
		t.Fatalf("in its domain: %+v %v", found, err)
	}
	if _, err := r.GetService("cart"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("in the default domain: got %v", err)
	}
	all, err := r.ListServices(registry.ListDomain(registry.WildcardDomain))
	if err != nil || len(all) != 2 {
		t.Fatalf("every domain: %+v %v", all, err)
	}
	domains := []string{all[0].Metadata["domain"], all[1].Metadata["domain"]}
	sort.Strings(domains)
	if domains[0] != "elsewhere" || domains[1] != "shop" {
		t.Fatalf("a wildcard list names each service's domain: %v", domains)
	}
	// Not refreshed, the node expires: the watch says create, then delete with the node.
	var actions []string
	for len(actions) < 2 {
		result, err := watcher.Next()
		if err != nil {
			t.Fatal(err)
		}
		if result.Action == "update" {
			continue
		}
		actions = append(actions, result.Action)
		if len(result.Service.Nodes) != 1 || result.Service.Nodes[0].Id != "cart-1" {
			t.Fatalf("%s without its node: %+v", result.Action, result.Service)
		}
	}
	if actions[0] != "create" || actions[1] != "delete" {
		t.Fatalf("watch results %v", actions)
	}
	watcher.Stop()
	if _, err := watcher.Next(); !errors.Is(err, registry.ErrWatcherStopped) {
		t.Fatalf("after Stop: %v", err)
	}
}

func TestStoreFiltersOrderAndExpiry(t *testing.T) {
	s := strataStore.NewStore(oneNode(t), store.Database("shop"), store.Table("users"))
	for _, k := range []string{"a.json", "b.json", "b.txt", "c.json"} {
		if err := s.Write(&store.Record{Key: k, Value: []byte(k)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Write(&store.Record{Key: "short", Value: []byte("x"), Expiry: time.Second}); err != nil {
		t.Fatal(err)
	}
	suffix, err := s.Read(".json", store.ReadSuffix())
	if err != nil || len(suffix) != 3 {
		t.Fatalf("suffix read: %v %v", suffix, err)
	}
	desc, err := s.List(store.ListSuffix(".json"), store.ListOrder(store.OrderDesc), store.ListLimit(2))
	if err != nil || len(desc) != 2 || desc[0] != "c.json" || desc[1] != "b.json" {
		t.Fatalf("descending list: %v %v", desc, err)
	}
	records, err := s.Read("short")
	if err != nil || records[0].Expiry <= 0 || records[0].Expiry > time.Second {
		t.Fatalf("a record's time left: %+v %v", records, err)
	}
	time.Sleep(1200 * time.Millisecond)
	if _, err := s.Read("short"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after its expiry: %v", err)
	}
	if err := s.Delete("never-there"); err != nil {
		t.Fatalf("deleting an absent key: %v", err)
	}
	// Another table of the same database is apart.
	if _, err := s.Read("a.json", store.ReadFrom("shop", "orders")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("another table: %v", err)
	}
}

func consumeIDs(t *testing.T, ch <-chan events.Event, n int, each func(events.Event)) []string {
	t.Helper()
	var ids []string
	timeout := time.After(30 * time.Second)
	for len(ids) < n {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("the channel closed after %v", ids)
			}
			ids = append(ids, string(ev.Payload))
			if each != nil {
				each(ev)
			}
		case <-timeout:
			t.Fatalf("only %v arrived", ids)
		}
	}
	return ids
}

func TestEventOffsetsNacksRetryLimitsAndTheStore(t *testing.T) {
	c := oneNode(t)
	s := strataEvents.NewStream(c)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := 0; i < 3; i++ {
		if err := s.Publish("audit", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	// An offset in the past replays what was published since.
	replay, err := s.Consume("audit", events.WithGroup("replay"), events.WithOffset(time.Now().Add(-time.Minute)), events.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	if got := consumeIDs(t, replay, 3, nil); fmt.Sprint(got) != "[0 1 2]" {
		t.Fatalf("replayed %v", got)
	}
	// No offset: new events only.
	fresh, err := s.Consume("audit", events.WithGroup("fresh"), events.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Publish("audit", []byte("3")); err != nil {
		t.Fatal(err)
	}
	if got := consumeIDs(t, fresh, 1, nil); got[0] != "3" {
		t.Fatalf("a new group got %v", got)
	}

	// A nack brings the event back at once; a retry limit of 1 drops an event after two
	// deliveries that were neither acked nor nacked.
	retry, err := s.Consume("jobs", events.WithGroup("workers"), events.WithAutoAck(false, 200*time.Millisecond),
		events.WithRetryLimit(1), events.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Publish("jobs", []byte("nacked")); err != nil {
		t.Fatal(err)
	}
	nacks := 0
	got := consumeIDs(t, retry, 2, func(ev events.Event) {
		if nacks == 0 {
			nacks++
			if err := ev.Nack(); err != nil {
				t.Errorf("nack: %v", err)
			}
			return
		}
		if err := ev.Ack(); err != nil {
			t.Errorf("ack: %v", err)
		}
	})
	if fmt.Sprint(got) != "[nacked nacked]" {
		t.Fatalf("after a nack: %v", got)
	}
	if err := s.Publish("jobs", []byte("ignored")); err != nil {
		t.Fatal(err)
	}
	if got := consumeIDs(t, retry, 2, nil); fmt.Sprint(got) != "[ignored ignored]" {
		t.Fatalf("redeliveries: %v", got)
	}
	select {
	case ev := <-retry:
		t.Fatalf("delivered past the retry limit: %s", ev.Payload)
	case <-time.After(time.Second):
	}

	// The event store reads by offset and limit; a written event is stored once per id.
	store := strataEvents.NewStore(c)
	page, err := store.Read("audit", events.ReadOffset(1), events.ReadLimit(2))
	if err != nil || len(page) != 2 || string(page[0].Payload) != "1" || page[0].ID == "" || page[0].Topic != "audit" {
		t.Fatalf("event store read: %+v %v", page, err)
	}
	for i := 0; i < 2; i++ {
		if err := store.Write(&events.Event{ID: "fixed", Topic: "written", Payload: []byte("once")}); err != nil {
			t.Fatal(err)
		}
	}
	if written, err := store.Read("written"); err != nil || len(written) != 1 {
		t.Fatalf("a repeated write: %+v %v", written, err)
	}
	if none, err := store.Read("no-such-topic"); err != nil || len(none) != 0 {
		t.Fatalf("an unknown topic: %v %v", none, err)
	}
}

// A queue's sharing is tested end to end (e2e_test.go).
func TestBrokerFansOutWithoutAQueue(t *testing.T) {
	b := strataBroker.NewBroker(oneNode(t))
	defer b.Disconnect()
	var mu sync.Mutex
	got := map[string][]string{}
	for _, name := range []string{"a", "b"} {
		if _, err := b.Subscribe("news", func(m *broker.Message) error {
			mu.Lock()
			got[name] = append(got[name], string(m.Body)+m.Header["k"])
			mu.Unlock()
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Publish("news", &broker.Message{Header: map[string]string{"k": "!"}, Body: []byte("hi")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both subscribers", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got["a"]) == 1 && len(got["b"]) == 1 && got["a"][0] == "hi!"
	})
}

func TestConfigPathsAndAbsentValues(t *testing.T) {
	cfg := strataConfig.NewConfig(oneNode(t), "")
	if err := cfg.Set("db", map[string]interface{}{"host": "h", "port": 5432}); err != nil {
		t.Fatal(err)
	}
	if v, err := cfg.Get("db.port"); err != nil || v.Int(0) != 5432 {
		t.Fatalf("a number: %v %v", v, err)
	}
	if err := cfg.Delete("db.host"); err != nil {
		t.Fatal(err)
	}
	v, err := cfg.Get("db.host")
	if err != nil || v.Exists() {
		t.Fatalf("a deleted path: exists=%v %v", v.Exists(), err)
	}
	var db map[string]int
	if v, _ := cfg.Get("db"); v.Scan(&db) != nil || db["port"] != 5432 {
		t.Fatalf("scan: %v", db)
	}
}

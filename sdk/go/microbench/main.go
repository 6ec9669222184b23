// Command microbench measures Micro's plugin interfaces side by side, in one run: the Strata
// plugins (sdk/go/micro) against go-micro's etcd registry plugin and NATS JetStream events
// plugin (github.com/go-micro/plugins/v4; Micro v3's own etcd and NATS plugins are not served
// by the Go module proxy). Each workload runs for each system in turn, rounds interleaved, and
// the table gives medians of the rounds and the median of each round's ratio of Strata to the
// peer.
//
//	microbench --strata 127.0.0.1:7420 --etcd 127.0.0.1:2379 --nats nats://127.0.0.1:4222
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	v3events "github.com/micro/micro/v3/service/events"
	v3registry "github.com/micro/micro/v3/service/registry"
	v3store "github.com/micro/micro/v3/service/store"
	strataEvents "github.com/strata-db/strata/sdk/go/micro/events"
	strataRegistry "github.com/strata-db/strata/sdk/go/micro/registry"
	strataStore "github.com/strata-db/strata/sdk/go/micro/store"
	"github.com/strata-db/strata/sdk/go/strata"

	natsjs "github.com/go-micro/plugins/v4/events/natsjs"
	etcdRegistry "github.com/go-micro/plugins/v4/registry/etcd"
	v4events "go-micro.dev/v4/events"
	v4registry "go-micro.dev/v4/registry"
)

// op is one operation of client c; it returns an error for a failed operation.
type op func(c int) error

// system is one implementation of the workloads; nil ops are not measured for it.
type system struct {
	name                 string
	register, lookup     op
	publish, write, read op
	setup                func() error
}

type result struct {
	System   string  `json:"system"`
	Workload string  `json:"workload"`
	Round    int     `json:"round"`
	Ops      int     `json:"ops"`
	Errors   int     `json:"errors"`
	OpsPerS  float64 `json:"ops_per_s"`
	P50Ms    float64 `json:"p50_ms"`
	P99Ms    float64 `json:"p99_ms"`
}

func measure(f op, clients int, duration time.Duration, maxOps int) (ops, errs int, rate float64, p50, p99 time.Duration) {
	var mu sync.Mutex
	var latencies []time.Duration
	var wg sync.WaitGroup
	deadline := time.Now().Add(duration)
	start := time.Now()
	perClient := maxOps / clients
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			local := make([]time.Duration, 0, 1024)
			failed := 0
			for i := 0; i < perClient && time.Now().Before(deadline); i++ {
				t := time.Now()
				if err := f(c); err != nil {
					failed++
					if failed == 1 {
						fmt.Fprintf(os.Stderr, "microbench: client %d: %v\n", c, err)
					}
					continue
				}
				local = append(local, time.Since(t))
			}
			mu.Lock()
			latencies = append(latencies, local...)
			errs += failed
			mu.Unlock()
		}(c)
	}
	wg.Wait()
	elapsed := time.Since(start)
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	ops = len(latencies)
	if ops == 0 {
		return 0, errs, 0, 0, 0
	}
	return ops, errs, float64(ops) / elapsed.Seconds(), latencies[ops/2], latencies[ops*99/100]
}

func median(xs []float64) float64 {
	sort.Float64s(xs)
	if len(xs) == 0 {
		return 0
	}
	return xs[len(xs)/2]
}

func main() {
	strataAddr := flag.String("strata", "127.0.0.1:7420", "Strata endpoints (comma-separated)")
	etcdAddr := flag.String("etcd", "", "etcd endpoint (host:port); empty: no etcd rows")
	natsAddr := flag.String("nats", "", "NATS URL with JetStream; empty: no NATS rows")
	clients := flag.Int("clients", 16, "concurrent clients")
	duration := flag.Duration("duration", 5*time.Second, "time bound of each trial")
	maxOps := flag.Int("ops", 20000, "operation bound of each trial")
	rounds := flag.Int("rounds", 3, "rounds, interleaved")
	jsonOut := flag.String("json", "", "write every trial here")
	flag.Parse()

	payload := []byte(strings.Repeat("x", 256))
	var systems []*system

	sc, err := strata.Connect([]string{*strataAddr}, strata.WithRequestTimeout(10*time.Second))
	if err != nil {
		fail(err)
	}
	defer sc.Close()
	systems = append(systems, microV3System("strata", strataRegistry.NewRegistry(sc), strataEvents.NewStream(sc),
		strataStore.NewStore(sc, v3store.Database("bench"), v3store.Table("bench")), *clients, payload))

	if *etcdAddr != "" || *natsAddr != "" {
		peer := &system{name: "etcd/nats"}
		if *etcdAddr != "" {
			r := etcdRegistry.NewRegistry(v4registry.Addrs(*etcdAddr))
			peer.register, peer.lookup = registryOps4(r, *clients)
			peer.setup = func() error {
				for c := 0; c < *clients; c++ {
					if err := peer.register(c); err != nil {
						return err
					}
				}
				return nil
			}
		}
		if *natsAddr != "" {
			s, err := natsjs.NewStream(natsjs.Address(*natsAddr), natsjs.ClusterID("bench"), natsjs.ClientID("microbench"))
			if err != nil {
				fail(err)
			}
			// natsjs makes a topic's JetStream stream when a consumer first asks for it.
			if _, err := s.Consume("bench-events", v4events.WithGroup("bench")); err != nil {
				fail(err)
			}
			peer.publish = func(int) error { return s.Publish("bench-events", payload) }
		}
		systems = append(systems, peer)
	}
	for _, s := range systems {
		if s.setup != nil {
			if err := s.setup(); err != nil {
				fail(fmt.Errorf("%s setup: %w", s.name, err))
			}
		}
	}

	workloads := []struct {
		name string
		of   func(*system) op
	}{
		{"registry-register", func(s *system) op { return s.register }},
		{"registry-lookup", func(s *system) op { return s.lookup }},
		{"store-write", func(s *system) op { return s.write }},
		{"store-read", func(s *system) op { return s.read }},
		{"events-publish", func(s *system) op { return s.publish }},
	}
	var all []result
	rates := map[string]map[string][]float64{}
	p50s := map[string]map[string][]float64{}
	failures := map[string]map[string]int{}
	for round := 1; round <= *rounds; round++ {
		for _, w := range workloads {
			for _, s := range systems {
				f := w.of(s)
				if f == nil {
					continue
				}
				ops, errs, rate, p50, p99 := measure(f, *clients, *duration, *maxOps)
				r := result{System: s.name, Workload: w.name, Round: round, Ops: ops, Errors: errs, OpsPerS: rate,
					P50Ms: float64(p50.Microseconds()) / 1000, P99Ms: float64(p99.Microseconds()) / 1000}
				all = append(all, r)
				fmt.Fprintf(os.Stderr, "round %d %-18s %-9s %8.0f ops/s p50 %6.2f ms p99 %6.2f ms errors %d\n",
					round, w.name, s.name, rate, r.P50Ms, r.P99Ms, errs)
				if rates[w.name] == nil {
					rates[w.name], p50s[w.name], failures[w.name] = map[string][]float64{}, map[string][]float64{}, map[string]int{}
				}
				failures[w.name][s.name] += errs
				rates[w.name][s.name] = append(rates[w.name][s.name], rate)
				p50s[w.name][s.name] = append(p50s[w.name][s.name], r.P50Ms)
			}
		}
	}
	fmt.Printf("| workload | Strata ops/s | p50 ms | errors | peer | peer ops/s | p50 ms | errors | Strata / peer |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, w := range workloads {
		sr, sp := median(rates[w.name]["strata"]), median(p50s[w.name]["strata"])
		pr, pp := median(rates[w.name]["etcd/nats"]), median(p50s[w.name]["etcd/nats"])
		peer, ratio := "none", "-"
		if pr > 0 {
			peer = map[bool]string{true: "NATS (natsjs)", false: "etcd (plugin)"}[w.name == "events-publish"]
			// The ratio of each round (the two ran side by side), then the median of those.
			var ratios []float64
			for i, r := range rates[w.name]["strata"] {
				if i < len(rates[w.name]["etcd/nats"]) && rates[w.name]["etcd/nats"][i] > 0 {
					ratios = append(ratios, r/rates[w.name]["etcd/nats"][i])
				}
			}
			ratio = fmt.Sprintf("%.2f", median(ratios))
		}
		fmt.Printf("| %s | %.0f | %.2f | %d | %s | %.0f | %.2f | %d | %s |\n", w.name, sr, sp, failures[w.name]["strata"],
			peer, pr, pp, failures[w.name]["etcd/nats"], ratio)
	}
	if *jsonOut != "" {
		data, _ := json.MarshalIndent(all, "", "  ")
		if err := os.WriteFile(*jsonOut, data, 0o644); err != nil {
			fail(err)
		}
	}
}

func microV3System(name string, r v3registry.Registry, e v3events.Stream, st v3store.Store, clients int, payload []byte) *system {
	s := &system{name: name}
	service := func(c int) *v3registry.Service {
		return &v3registry.Service{Name: fmt.Sprintf("bench-%d", c), Version: "1",
			Nodes: []*v3registry.Node{{Id: fmt.Sprintf("node-%d", c), Address: "10.0.0.1:9000"}}}
	}
	s.register = func(c int) error { return r.Register(service(c), v3registry.RegisterTTL(30*time.Second)) }
	s.lookup = func(c int) error {
		_, err := r.GetService(fmt.Sprintf("bench-%d", c%clients))
		return err
	}
	s.publish = func(int) error { return e.Publish("bench-events", payload) }
	writes := make([]int, clients) // each client counts its own writes
	s.write = func(c int) error {
		writes[c]++
		return st.Write(&v3store.Record{Key: fmt.Sprintf("k-%d-%d", c, writes[c]%1000), Value: payload})
	}
	s.read = func(c int) error {
		_, err := st.Read(fmt.Sprintf("k-%d-%d", c, 1))
		return err
	}
	s.setup = func() error {
		for c := 0; c < clients; c++ {
			if err := s.register(c); err != nil {
				return err
			}
			if err := st.Write(&v3store.Record{Key: fmt.Sprintf("k-%d-1", c), Value: payload}); err != nil {
				return err
			}
		}
		return nil
	}
	return s
}

func registryOps4(r v4registry.Registry, clients int) (op, op) {
	register := func(c int) error {
		return r.Register(&v4registry.Service{Name: fmt.Sprintf("bench-%d", c), Version: "1",
			Nodes: []*v4registry.Node{{Id: fmt.Sprintf("node-%d", c), Address: "10.0.0.1:9000"}}}, v4registry.RegisterTTL(30*time.Second))
	}
	lookup := func(c int) error {
		_, err := r.GetService(fmt.Sprintf("bench-%d", c%clients))
		return err
	}
	return register, lookup
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "microbench:", err)
	os.Exit(1)
}

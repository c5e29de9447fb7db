// etcd_load drives etcd 3.4 with its own Go client (clientv3) for bench/compare.py: a
// native peer for the Python client, which understates etcd on this machine.
//
//	etcd_load -endpoints URL[,URL...] -workload put|get|txn -clients N -seconds S
//	          [-value-size 100] [-keys 10000] [-batch 128]
//
// put: each client writes value-size bytes to one key after another; get: linearizable
// reads of keys written first; txn: each client puts batch keys (of -keys) per transaction,
// ops count keys. Prints one JSON line: ops, seconds, ops_per_s, p50_ms, p99_ms (per call).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/clientv3"
)

type result struct {
	Ops     int     `json:"ops"`
	Calls   int     `json:"calls"`
	Seconds float64 `json:"seconds"`
	OpsPerS float64 `json:"ops_per_s"`
	P50Ms   float64 `json:"p50_ms"`
	P99Ms   float64 `json:"p99_ms"`
	Errors  int     `json:"errors"`
}

func percentile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q / 100 * float64(len(sorted)-1))
	return float64(sorted[i].Microseconds()) / 1000
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "etcd_load: "+format+"\n", args...)
	os.Exit(2)
}

func main() {
	endpoints := flag.String("endpoints", "", "comma-separated client URLs")
	workload := flag.String("workload", "put", "put, get or txn")
	clients := flag.Int("clients", 1, "concurrent clients")
	seconds := flag.Float64("seconds", 5, "how long to run")
	valueSize := flag.Int("value-size", 100, "bytes per value")
	keys := flag.Int("keys", 10000, "distinct keys")
	batch := flag.Int("batch", 128, "puts per transaction (txn)")
	flag.Parse()
	if *endpoints == "" || *clients < 1 || *seconds <= 0 || *valueSize < 1 || *keys < 1 || *batch < 1 {
		fail("need -endpoints, and positive -clients, -seconds, -value-size, -keys, -batch")
	}
	if *workload != "put" && *workload != "get" && *workload != "txn" {
		fail("-workload must be put, get or txn, got %q", *workload)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(*endpoints, ","), DialTimeout: 5 * time.Second})
	if err != nil {
		fail("connect: %v", err)
	}
	defer cli.Close()
	value := strings.Repeat("v", *valueSize)
	key := func(i int) string { return fmt.Sprintf("uav-%05d", i%*keys) }
	if *workload == "get" {
		for i := 0; i < *keys && i < 1000; i++ {
			if _, err := cli.Put(context.Background(), key(i), value); err != nil {
				fail("seed: %v", err)
			}
		}
	}
	deadline := time.Now().Add(time.Duration(*seconds * float64(time.Second)))
	var mu sync.Mutex
	var all []time.Duration
	ops, errors := 0, 0
	var wg sync.WaitGroup
	start := time.Now()
	for c := 0; c < *clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			var mine []time.Duration
			myOps, myErrors := 0, 0
			for n := c; time.Now().Before(deadline); n += *clients {
				t := time.Now()
				var err error
				done := 1
				switch *workload {
				case "put":
					_, err = cli.Put(context.Background(), key(n), value)
				case "get":
					_, err = cli.Get(context.Background(), key(n%1000))
				case "txn":
					puts := make([]clientv3.Op, *batch)
					for b := range puts {
						puts[b] = clientv3.OpPut(key(n**batch+b), value)
					}
					_, err = cli.Txn(context.Background()).Then(puts...).Commit()
					done = *batch
				}
				if err != nil {
					myErrors++
					continue
				}
				mine = append(mine, time.Since(t))
				myOps += done
			}
			mu.Lock()
			all = append(all, mine...)
			ops += myOps
			errors += myErrors
			mu.Unlock()
		}(c)
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	out, _ := json.Marshal(result{ops, len(all), elapsed, float64(ops) / elapsed, percentile(all, 50), percentile(all, 99), errors})
	fmt.Println(string(out))
}

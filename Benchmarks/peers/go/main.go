// Go peer of the GMP benchmarks: the same workloads with the same
// parameters, printed in the same JSON format as `Benchmarks --json`.
//
//	go run . [-filter NAME]
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

type result struct {
	name    string
	ops     int
	nsPerOp float64
	extra   string
}

func rssBytes() int {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	pages, _ := strconv.Atoi(f[1])
	return pages * os.Getpagesize()
}

func benchSpawn() result {
	n := 1_000_000
	var wg sync.WaitGroup
	wg.Add(n)
	t0 := time.Now()
	for i := 0; i < n; i++ {
		go func() { wg.Done() }()
	}
	wg.Wait()
	return result{"spawn", n, float64(time.Since(t0).Nanoseconds()) / float64(n), fmt.Sprintf("procs=%d", runtime.GOMAXPROCS(0))}
}

func benchYield() result {
	total := 4_000_000
	gs := 2 * runtime.GOMAXPROCS(0)
	var wg, start sync.WaitGroup
	wg.Add(gs)
	start.Add(1)
	t0 := time.Now()
	for g := 0; g < gs; g++ {
		go func() {
			start.Wait()
			for i := 0; i < total/gs; i++ {
				runtime.Gosched()
			}
			wg.Done()
		}()
	}
	start.Done()
	wg.Wait()
	return result{"yield", total, float64(time.Since(t0).Nanoseconds()) / float64(total), fmt.Sprintf("gs=%d", gs)}
}

func benchSpawnTree() result {
	depth := 20
	total := (1 << (depth + 1)) - 1
	var wg sync.WaitGroup
	wg.Add(total)
	var node func(d int)
	node = func(d int) {
		if d < depth {
			go node(d + 1)
			go node(d + 1)
		}
		wg.Done()
	}
	t0 := time.Now()
	go node(0)
	wg.Wait()
	return result{"spawntree", total, float64(time.Since(t0).Nanoseconds()) / float64(total), fmt.Sprintf("depth=%d", depth)}
}

func benchParked() result {
	n := 100_000
	before := rssBytes()
	var gate, started, finished sync.WaitGroup
	gate.Add(1)
	started.Add(n)
	finished.Add(n)
	t0 := time.Now()
	for i := 0; i < n; i++ {
		go func() {
			started.Done()
			gate.Wait()
			finished.Done()
		}()
	}
	started.Wait()
	t1 := time.Since(t0)
	after := rssBytes()
	gate.Done()
	finished.Wait()
	return result{"parked", n, float64(t1.Nanoseconds()) / float64(n), fmt.Sprintf("rss_bytes_per_g=%d", (after-before)/n)}
}

func benchTimers() result {
	n := 100_000
	var wg sync.WaitGroup
	wg.Add(n)
	t0 := time.Now()
	for i := 0; i < n; i++ {
		go func() {
			for j := 0; j < 10; j++ {
				time.Sleep(time.Millisecond)
			}
			wg.Done()
		}()
	}
	wg.Wait()
	return result{"timers", n * 10, float64(time.Since(t0).Nanoseconds()) / float64(n*10), ""}
}

func benchPingPong() result {
	n := 1_000_000
	ping, pong := make(chan int), make(chan int)
	done := make(chan bool)
	go func() {
		for v := range ping {
			pong <- v
		}
		done <- true
	}()
	t0 := time.Now()
	for i := 0; i < n; i++ {
		ping <- i
		<-pong
	}
	t1 := time.Since(t0)
	close(ping)
	<-done
	return result{"pingpong", n, float64(t1.Nanoseconds()) / float64(n), "ns per round trip"}
}

func benchBuffered() result {
	n := 10_000_000
	c := make(chan int, 1024)
	t0 := time.Now()
	go func() {
		for i := 0; i < n; i++ {
			c <- i
		}
		close(c)
	}()
	sum := 0
	for v := range c {
		sum += v
	}
	if sum != n*(n-1)/2 {
		panic("sum")
	}
	return result{"buffered", n, float64(time.Since(t0).Nanoseconds()) / float64(n), ""}
}

func benchFanIn() result {
	n, producers := 8_000_000, 8
	c := make(chan int, 128)
	t0 := time.Now()
	for p := 0; p < producers; p++ {
		go func() {
			for i := 0; i < n/producers; i++ {
				c <- i
			}
		}()
	}
	for i := 0; i < n; i++ {
		<-c
	}
	return result{"fanin", n, float64(time.Since(t0).Nanoseconds()) / float64(n), fmt.Sprintf("producers=%d", producers)}
}

func benchSelect() result {
	n := 4_000_000
	cs := make([]chan int, 4)
	for i := range cs {
		cs[i] = make(chan int, 16)
	}
	t0 := time.Now()
	for _, c := range cs {
		c := c
		go func() {
			for i := 0; i < n/4; i++ {
				c <- i
			}
		}()
	}
	got := 0
	for got < n {
		select {
		case <-cs[0]:
			got++
		case <-cs[1]:
			got++
		case <-cs[2]:
			got++
		case <-cs[3]:
			got++
		}
	}
	return result{"select", n, float64(time.Since(t0).Nanoseconds()) / float64(n), ""}
}

func main() {
	filter := flag.String("filter", "", "run only workloads whose name contains this")
	flag.Parse()
	all := []struct {
		name string
		f    func() result
	}{
		{"spawn", benchSpawn}, {"yield", benchYield}, {"spawntree", benchSpawnTree},
		{"parked", benchParked}, {"timers", benchTimers},
		{"pingpong", benchPingPong}, {"buffered", benchBuffered}, {"fanin", benchFanIn}, {"select", benchSelect},
	}
	for _, w := range all {
		if *filter != "" && w.name != *filter && !strings.Contains(w.name, *filter) {
			continue
		}
		r := w.f()
		fmt.Printf("{\"name\":\"%s\",\"ops\":%d,\"ns_per_op\":%g,\"extra\":\"%s\"}\n", r.name, r.ops, r.nsPerOp, r.extra)
	}
}

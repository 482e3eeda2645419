// Go peer of the GMP benchmarks: the same workloads with the same
// parameters, printed in the same JSON format as `Benchmarks --json`.
//
//	go run . [-filter NAME]
//
// The chat workloads are driven by the Swift benchmark client against this
// binary's -chat-server (chat.go).
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
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

// blockGoroutines starts n goroutines that each block on a WaitGroup,
// holds them for hold after the last has started, then releases them; it
// returns the time to start them all and the resident memory per goroutine
// at the end of the hold.
func blockGoroutines(n int, hold time.Duration) (time.Duration, int) {
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
	time.Sleep(hold)
	after := rssBytes()
	gate.Done()
	finished.Wait()
	return t1, (after - before) / n
}

func benchParked() result {
	n := 100_000
	t, perG := blockGoroutines(n, 0)
	return result{"parked", n, float64(t.Nanoseconds()) / float64(n), fmt.Sprintf("rss_bytes_per_g=%d", perG)}
}

// 100,000 goroutines blocked for 3 s; resident memory per goroutine after.
func benchIdle() result {
	n := 100_000
	_, perG := blockGoroutines(n, 3*time.Second)
	return result{"idle", n, 0, fmt.Sprintf("rss_bytes_per_g=%d", perG)}
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

// One goroutine per P runs for 0.5 s without blocking (computing, then in
// raw nanosleep system calls of 1 ms) beside a ticker on a 10 ms schedule:
// the worst lateness of a tick.
func benchStarvation() result {
	worstLateness := func(blocking bool) (time.Duration, int) {
		procs := runtime.GOMAXPROCS(0)
		period := 10 * time.Millisecond
		end := time.Now().Add(500 * time.Millisecond)
		done := make(chan struct {
			worst time.Duration
			ticks int
		}, 1)
		var hogs sync.WaitGroup
		hogs.Add(procs)
		go func() {
			var worst time.Duration
			ticks := 0
			next := time.Now().Add(period)
			for next.Before(end) {
				time.Sleep(time.Until(next))
				if late := time.Since(next); late > worst {
					worst = late
				}
				ticks++
				next = next.Add(period)
			}
			done <- struct {
				worst time.Duration
				ticks int
			}{worst, ticks}
		}()
		for i := 0; i < procs; i++ {
			go func() {
				x := 0
				ts := syscall.Timespec{Nsec: 1_000_000}
				for time.Now().Before(end) {
					if blocking {
						syscall.Syscall(syscall.SYS_NANOSLEEP, uintptr(unsafe.Pointer(&ts)), 0, 0)
					} else {
						for j := 0; j < 1000; j++ {
							x += j
						}
					}
				}
				if x == 42 {
					fmt.Println(x)
				}
				hogs.Done()
			}()
		}
		hogs.Wait()
		r := <-done
		return r.worst, r.ticks
	}
	computing, ticks := worstLateness(false)
	blocking, _ := worstLateness(true)
	return result{"starvation", ticks, float64(computing.Nanoseconds()),
		fmt.Sprintf("worst_late_ms=%g worst_late_blocking_ms=%g", float64(computing.Nanoseconds())/1e6, float64(blocking.Nanoseconds())/1e6)}
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

func benchEcho() result {
	clients, rounds := 100, 10_000
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
	var wg sync.WaitGroup
	wg.Add(clients)
	t0 := time.Now()
	for i := 0; i < clients; i++ {
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				panic(err)
			}
			defer c.Close()
			msg := make([]byte, 64)
			for r := 0; r < rounds; r++ {
				if _, err := c.Write(msg); err != nil {
					panic(err)
				}
				if _, err := io.ReadFull(c, msg); err != nil {
					panic(err)
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(t0)
	l.Close()
	return result{"echo", clients * rounds, float64(el.Nanoseconds()) / float64(clients*rounds), fmt.Sprintf("clients=%d", clients)}
}

func benchIdleConns() result {
	n := 10_000
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	var accepted, closed sync.WaitGroup
	accepted.Add(n)
	closed.Add(n)
	before := rssBytes()
	go func() {
		for i := 0; i < n; i++ {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				accepted.Done()
				b := make([]byte, 16)
				c.Read(b)
				c.Close()
				closed.Done()
			}()
		}
	}()
	port := l.Addr().(*net.TCPAddr).Port
	child := exec.Command("/proc/self/exe", "-idleconns-client", fmt.Sprintf("%d:%d", port, n))
	stdin, _ := child.StdinPipe()
	t0 := time.Now()
	if err := child.Start(); err != nil {
		panic(err)
	}
	accepted.Wait()
	el := time.Since(t0)
	time.Sleep(3 * time.Second) // idle for a while, as idle connections are
	after := rssBytes()
	stdin.Close()
	closed.Wait()
	child.Wait()
	l.Close()
	return result{"idleconns", n, float64(el.Nanoseconds()) / float64(n), fmt.Sprintf("rss_bytes_per_conn=%d (server side)", (after-before)/n)}
}

func idleConnsClient(spec string) {
	parts := strings.Split(spec, ":")
	port, _ := strconv.Atoi(parts[0])
	n, _ := strconv.Atoi(parts[1])
	conns := make([]net.Conn, 0, n)
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			panic(err)
		}
		conns = append(conns, c)
	}
	io.ReadAll(os.Stdin)
	for _, c := range conns {
		c.Close()
	}
	os.Exit(0)
}

func main() {
	filter := flag.String("filter", "", "run only the workload of this name")
	client := flag.String("idleconns-client", "", "internal: PORT:N, dial N idle connections")
	chat := flag.String("chat-server", "", "serve the gorilla-style chat hub on HOST:PORT")
	flag.Parse()
	if *client != "" {
		idleConnsClient(*client)
	}
	if *chat != "" {
		chatServer(*chat)
		return
	}
	all := []struct {
		name string
		f    func() result
	}{
		{"spawn", benchSpawn}, {"yield", benchYield}, {"spawntree", benchSpawnTree},
		{"parked", benchParked}, {"idle", benchIdle}, {"timers", benchTimers}, {"starvation", benchStarvation},
		{"pingpong", benchPingPong}, {"buffered", benchBuffered}, {"fanin", benchFanIn}, {"select", benchSelect},
		{"selectonce", func() result { r := benchSelect(); r.name = "selectonce"; return r }},
		{"echo", benchEcho}, {"idleconns", benchIdleConns},
	}
	for _, w := range all {
		if *filter != "" && w.name != *filter {
			continue
		}
		r := w.f()
		fmt.Printf("{\"name\":\"%s\",\"ops\":%d,\"ns_per_op\":%g,\"extra\":\"%s\"}\n", r.name, r.ops, r.nsPerOp, r.extra)
	}
}

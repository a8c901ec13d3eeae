// Command gocounter is an e2e victim written in Go: the runtime is
// multithreaded, handles signals and runs timers, and all of that must
// survive a dump and restore (test/e2e, test/victims/README.md).
//
//	gocounter READY STATUS_FILE
//
// A goroutine driven by a time.Ticker (10 ms) increments a counter and
// pwrite()s it, as a fixed-width decimal line, at offset 0 of STATUS_FILE
// (the counter victim's format). Three worker goroutines compute and count
// on their own. The heap holds an 8 MiB slice and a map, both patterned.
// signal.Notify delivers SIGUSR1, counted and logged as
// "gocounter: SIGUSR1 #N at count C", and SIGTERM, which runs the self-check:
// same pid, the ticker and every worker still advance, the monotonic clock
// never went back, the heap is intact, the GC and allocation still work.
// It prints "PASS" and exits 0, or one "FAIL: ..." line per problem and
// exits 1. READY is created once the counter reaches 5.
//
// Besides fds 0-2 and STATUS_FILE, the process holds what the Go runtime
// opens by itself: an epoll fd and an eventfd (the network poller, which
// the first timer creates even without any network I/O) and, on a cgroup v1
// machine, /sys/fs/cgroup/cpu/cpu.cfs_{quota,period}_us (Go >= 1.25 keeps
// them open to follow the CPU limit). No sockets, no pipes.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
)

const workers = 3

var (
	count    atomic.Uint64
	work     [workers]atomic.Uint64
	usr1     atomic.Uint64
	failures atomic.Int64
	backward atomic.Int64 // ticks that saw the monotonic clock go back
)

func say(format string, args ...any) {
	syscall.Write(1, []byte(fmt.Sprintf(format, args...)+"\n"))
}

func fail(format string, args ...any) {
	failures.Add(1)
	syscall.Write(2, []byte("FAIL: "+fmt.Sprintf(format, args...)+"\n"))
}

func setupFail(format string, args ...any) {
	syscall.Write(2, []byte("SETUP: "+fmt.Sprintf(format, args...)+"\n"))
	os.Exit(2)
}

func pattern(seed, i uint64) uint64 {
	x := (i+1)*0x9E3779B97F4A7C15 ^ (seed<<56 | seed)
	x ^= x >> 29
	x *= 0xBF58476D1CE4E5B9
	return x ^ (x >> 32)
}

// junk is a package variable so that the garbage made in it is really
// allocated, not optimized away.
var junk [][]byte

func main() {
	if len(os.Args) < 3 {
		setupFail("usage: gocounter READY STATUS_FILE")
	}
	ready, status := os.Args[1], os.Args[2]
	pid := syscall.Getpid()

	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGTERM)

	fd, err := syscall.Open(status, syscall.O_RDWR|syscall.O_CREAT|syscall.O_TRUNC|syscall.O_CLOEXEC, 0o644)
	if err != nil {
		setupFail("open %s: %v", status, err)
	}
	data := make([]uint64, 1<<20)
	for i := range data {
		data[i] = pattern(33, uint64(i))
	}
	m := make(map[uint64]uint64, 10000)
	for i := uint64(0); i < 10000; i++ {
		m[i] = pattern(34, i)
	}

	write := func(n uint64) {
		line := fmt.Sprintf("%20d\n", n)
		if w, err := syscall.Pwrite(fd, []byte(line), 0); err != nil || w != len(line) {
			fail("pwrite %s: %d, %v", status, w, err)
		}
	}
	readyc := make(chan struct{})
	go func() {
		t := time.NewTicker(10 * time.Millisecond)
		last := time.Now()
		for range t.C {
			now := time.Now()
			if now.Before(last) {
				backward.Add(1)
			}
			last = now
			n := count.Add(1)
			write(n)
			if n == 5 {
				close(readyc)
			}
		}
	}()
	for w := 0; w < workers; w++ {
		go func(w int) {
			x := uint64(w)
			for {
				for i := 0; i < 100000; i++ {
					x = x*6364136223846793005 + 1442695040888963407
				}
				if x == 0 {
					runtime.Gosched() // keeps x live
				}
				work[w].Add(1)
				time.Sleep(2 * time.Millisecond)
			}
		}(w)
	}

	<-readyc
	rfd, err := syscall.Open(ready, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_CLOEXEC, 0o644)
	if err != nil {
		setupFail("create %s: %v", ready, err)
	}
	syscall.Close(rfd)
	say("gocounter: pid %d ready, GOMAXPROCS %d", pid, runtime.GOMAXPROCS(0))

	for sig := range sigs {
		if sig == syscall.SIGUSR1 {
			n := usr1.Add(1)
			say("gocounter: SIGUSR1 #%d at count %d", n, count.Load())
			continue
		}
		break // SIGTERM
	}

	if got := syscall.Getpid(); got != pid {
		fail("getpid() is %d, was %d", got, pid)
	}
	c0 := count.Load()
	var w0 [workers]uint64
	for w := range w0 {
		w0[w] = work[w].Load()
	}
	time.Sleep(150 * time.Millisecond)
	if c := count.Load(); c <= c0 {
		fail("the ticker goroutine is stuck at %d", c)
	}
	for w := range w0 {
		if work[w].Load() == w0[w] {
			fail("worker goroutine %d is stuck at %d", w, w0[w])
		}
	}
	if n := backward.Load(); n > 0 {
		fail("time.Now() went back %d time(s)", n)
	}
	for i := range data {
		if data[i] != pattern(33, uint64(i)) {
			fail("heap slice word %d is %#x", i, data[i])
			break
		}
	}
	if len(m) != 10000 {
		fail("map has %d entries", len(m))
	}
	for i := uint64(0); i < 10000; i++ {
		if m[i] != pattern(34, i) {
			fail("map entry %d is %#x", i, m[i])
			break
		}
	}
	// Garbage for the collector to find after the restore.
	for i := 0; i < 64; i++ {
		junk = append(junk, make([]byte, 256<<10))
	}
	junk = nil
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	say("gocounter: count %d, SIGUSR1 %d, GC cycles %d", count.Load(), usr1.Load(), ms.NumGC)
	if failures.Load() > 0 {
		say("%d check(s) failed", failures.Load())
		os.Exit(1)
	}
	say("PASS")
	os.Exit(0)
}

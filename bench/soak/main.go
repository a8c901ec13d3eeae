// Command soak checkpoints and restores a redis-server under a client load
// again and again, with the stasis library in this process, and reports
// whether anything leaks or is lost: stasis' own fd count and RSS (read
// from /proc/self between cycles), redis' RSS, the client requests and
// their failures, the time per cycle.
//
//	go run ./bench/soak -cycles 1000        # as root
//
// Cycles alternate a dump with LeaveRunning (criu dump -R) and a dump that
// kills redis followed by a restore, both with TCPEstablished so that the
// clients' connections survive. The clients (Go, in this process) run
// SET/GET/INCR in a loop on several connections and check every reply.
//
// Threads and children: redis is a child of this process (the original
// one and every restored one). Nothing waits for children while a dump
// runs: a wait4 in the tracer's thread group would steal the tracee's
// ptrace stops. A killed redis is reaped right after its dump returns.
// Only redis' pid is ever signalled.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis"

	"github.com/stasis-cr/stasis/internal/linux"
)

func main() {
	cycles := flag.Int("cycles", 1000, "checkpoint/restore cycles (odd ones dump -R, even ones dump and restore)")
	conns := flag.Int("conns", 4, "client connections")
	every := flag.Int("every", 100, "print the figures every N cycles")
	pause := flag.Duration("pause", time.Millisecond, "pause of each client between two requests")
	keys := flag.Int("keys", 20000, "keys loaded before the first cycle")
	gap := flag.Duration("gap", 100*time.Millisecond, "time between two cycles, for the clients to run (a dump holds their packets)")
	keep := flag.Bool("keep", false, "keep the temp dir")
	flag.Parse()
	if err := run(*cycles, *conns, *every, *pause, *gap, *keys, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

// sample is the resource figures at one point.
type sample struct {
	cycle     int
	fds       int
	rssKiB    int64
	heapKiB   uint64
	goroutine int
	redisKiB  int64
	children  int
	zombies   int
	requests  int64
	failures  int64
}

func run(cycles, nconns, every int, pause, gap time.Duration, nkeys int, keep bool) error {
	if os.Geteuid() != 0 {
		return errors.New("run as root: stasis dumps and restores redis-server")
	}
	redisBin, err := exec.LookPath("redis-server")
	if err != nil {
		return fmt.Errorf("redis-server: %w", err)
	}
	// fds inherited from the shell would go to redis, and then be open
	// outside the dumped tree.
	if err := cloexecInherited(); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "stasis-soak-")
	if err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(tmp)
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	rd, err := startRedis(redisBin, tmp, port)
	if err != nil {
		return err
	}
	defer rd.kill()

	// Data first, so that redis holds some memory whose size must stay.
	if err := preload(port, nkeys); err != nil {
		return err
	}
	load := startLoad(port, nconns, pause)
	defer load.stop()
	time.Sleep(200 * time.Millisecond)

	imgs := filepath.Join(tmp, "images")
	quiet := slog.New(slog.DiscardHandler)
	var samples []sample
	take := func(cycle int) {
		s := measure(cycle, rd.pid, load)
		samples = append(samples, s)
		printSample(s)
	}
	fmt.Printf("redis-server pid %d on 127.0.0.1:%d, %d keys, %d client connections; %d cycles\n", rd.pid, port, nkeys, nconns, cycles)
	printHeader()
	take(0)
	var dumpR, dumpK, restore []time.Duration
	start := time.Now()
	for c := 1; c <= cycles; c++ {
		if err := os.RemoveAll(imgs); err != nil {
			return err
		}
		dopts := stasis.DumpOptions{Pid: rd.pid, ImagesDir: imgs, Log: quiet}
		dopts.Files.TCPEstablished = true
		if c%2 == 1 {
			dopts.LeaveRunning = true
			t0 := time.Now()
			if err := stasis.Dump(dopts); err != nil {
				return fmt.Errorf("cycle %d: dump -R: %w", c, err)
			}
			dumpR = append(dumpR, time.Since(t0))
		} else {
			t0 := time.Now()
			if err := stasis.Dump(dopts); err != nil {
				return fmt.Errorf("cycle %d: dump: %w", c, err)
			}
			dumpK = append(dumpK, time.Since(t0))
			if err := rd.reap(); err != nil {
				return fmt.Errorf("cycle %d: %w", c, err)
			}
			ropts := stasis.RestoreOptions{ImagesDir: imgs, Log: quiet}
			ropts.Files.TCPEstablished = true
			t0 = time.Now()
			r, err := stasis.Restore(ropts)
			if err != nil {
				return fmt.Errorf("cycle %d: restore: %w", c, err)
			}
			restore = append(restore, time.Since(t0))
			if r.Pid != rd.pid {
				return fmt.Errorf("cycle %d: restored redis has pid %d, was %d", c, r.Pid, rd.pid)
			}
			rd.alive = true
		}
		if err := load.firstErr(); err != nil {
			return fmt.Errorf("cycle %d: client: %w", c, err)
		}
		if c%every == 0 || c == cycles {
			take(c)
		}
		time.Sleep(gap)
	}
	elapsed := time.Since(start)
	// Every request sent must have been answered before the end.
	load.stop()
	take(cycles)
	fmt.Println()
	fmt.Printf("%d cycles in %v (%v per cycle, %v of it the gap)\n  dump -R:   %s\n  dump+kill: %s\n  restore:   %s\n",
		cycles, elapsed.Round(time.Millisecond), (elapsed / time.Duration(cycles)).Round(time.Millisecond), gap,
		stats(dumpR), stats(dumpK), stats(restore))
	first, last := samples[0], samples[len(samples)-1]
	fmt.Printf("stasis fds %d -> %d, RSS %d -> %d KiB, Go heap %d -> %d KiB; redis RSS %d -> %d KiB\n",
		first.fds, last.fds, first.rssKiB, last.rssKiB, first.heapKiB, last.heapKiB, first.redisKiB, last.redisKiB)
	fmt.Printf("client requests %d, failures %d, unanswered %d\n", last.requests, last.failures, load.pending.Load())
	fmt.Printf("killed redis already reaped by stasis.Dump itself: %d of %d times\n", rd.reapedByDump, len(dumpK))
	if last.failures > 0 {
		return fmt.Errorf("%d client requests failed, the first: %v", last.failures, load.firstErr())
	}
	if load.pending.Load() != 0 {
		return fmt.Errorf("%d client requests unanswered", load.pending.Load())
	}
	return nil
}

func printHeader() {
	fmt.Printf("%6s %6s %10s %10s %6s %10s %8s %8s %10s %8s\n",
		"cycle", "fds", "rss KiB", "heap KiB", "gorout", "redis KiB", "children", "zombies", "requests", "failures")
}

func printSample(s sample) {
	fmt.Printf("%6d %6d %10d %10d %6d %10d %8d %8d %10d %8d\n",
		s.cycle, s.fds, s.rssKiB, s.heapKiB, s.goroutine, s.redisKiB, s.children, s.zombies, s.requests, s.failures)
}

func stats(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	r := func(d time.Duration) time.Duration { return d.Round(100 * time.Microsecond) }
	return fmt.Sprintf("mean %v median %v p99 %v max %v (n=%d)", r(sum/time.Duration(len(s))), r(s[len(s)/2]), r(s[len(s)*99/100]), r(s[len(s)-1]), len(s))
}

func measure(cycle, redisPid int, l *load) sample {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s := sample{cycle: cycle, heapKiB: ms.HeapAlloc >> 10, goroutine: runtime.NumGoroutine(),
		requests: l.requests.Load(), failures: l.failures.Load()}
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		s.fds = len(ents) - 1 // the one ReadDir itself holds
	}
	s.rssKiB = statusKiB("/proc/self/status", "VmRSS")
	s.redisKiB = statusKiB(fmt.Sprintf("/proc/%d/status", redisPid), "VmRSS")
	s.children, s.zombies = children(os.Getpid())
	return s
}

func statusKiB(path, field string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && k == field {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return -1
}

// children counts the children of pid, and those of them that are zombies.
func children(pid int) (n, zombies int) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			n++
			if f[0] == "Z" {
				zombies++
			}
		}
	}
	return n, zombies
}

// cloexecInherited marks every fd above 2 close-on-exec.
func cloexecInherited() error {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			unix.CloseOnExec(fd)
		}
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// redis is the redis-server this command started, in whatever incarnation.
type redis struct {
	pid   int
	alive bool
	// reapedByDump counts the dumps after which redis was already reaped.
	reapedByDump int
}

// startRedis starts redis-server in its own session, with a config of its
// own in dir, no persistence, its log in dir.
func startRedis(bin, dir string, port int) (*redis, error) {
	conf := filepath.Join(dir, "redis.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`bind 127.0.0.1
port %d
protected-mode no
daemonize no
supervised no
save ""
appendonly no
dir %s
logfile ""
`, port, dir)), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(filepath.Join(dir, "redis.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	// Never cmd.Wait: see the package comment.
	r := &redis{pid: cmd.Process.Pid, alive: true}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			return r, nil
		}
		if time.Now().After(deadline) {
			r.kill()
			b, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
			return nil, fmt.Errorf("redis-server not listening on %d after 10s: %v\n%s", port, err, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// reap collects redis after a dump killed it, which frees its pid.
func (r *redis) reap() error {
	var ws unix.WaitStatus
	for {
		_, err := linux.Wait4(r.pid, &ws, unix.WALL)
		if errors.Is(err, unix.ECHILD) {
			// redis is also a child of the tracer stasis.Dump ran: its
			// wait4 for the killed tracee may have reaped it.
			r.alive = false
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", r.pid)); err == nil {
				return fmt.Errorf("redis pid %d: not our child any more, but still there after the dump", r.pid)
			}
			r.reapedByDump++
			return nil
		}
		if err != nil {
			return fmt.Errorf("reap redis pid %d after the dump: %w", r.pid, err)
		}
		break
	}
	r.alive = false
	if !ws.Signaled() || ws.Signal() != unix.SIGKILL {
		return fmt.Errorf("redis pid %d ended with %v after the dump, want SIGKILL", r.pid, ws)
	}
	return nil
}

func (r *redis) kill() {
	if !r.alive {
		return
	}
	unix.Kill(r.pid, unix.SIGKILL)
	var ws unix.WaitStatus
	unix.Wait4(r.pid, &ws, unix.WALL, nil)
	r.alive = false
}

// client is one RESP connection.
type client struct {
	c  net.Conn
	br *bufio.Reader
}

func dial(port int) (*client, error) {
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return nil, err
	}
	return &client{c: c, br: bufio.NewReader(c)}, nil
}

// do sends one command and reads its reply as text (simple string,
// integer, bulk; "(nil)" for a null bulk). The deadline is long: during a
// dump the network lock holds the packets, TCP retransmits them after.
func (c *client) do(args ...string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	c.c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.WriteString(c.c, b.String()); err != nil {
		return "", fmt.Errorf("%s: send: %w", args[0], err)
	}
	line, err := c.br.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("%s: read the reply: %w", args[0], err)
	}
	line = strings.TrimSuffix(line, "\r\n")
	switch {
	case line == "":
		return "", fmt.Errorf("%s: empty reply", args[0])
	case line[0] == '+' || line[0] == ':':
		return line[1:], nil
	case line[0] == '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", fmt.Errorf("%s: bulk length %q", args[0], line)
		}
		if n < 0 {
			return "(nil)", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(c.br, buf); err != nil {
			return "", fmt.Errorf("%s: bulk: %w", args[0], err)
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("%s: reply %q", args[0], line)
}

func preload(port, n int) error {
	c, err := dial(port)
	if err != nil {
		return err
	}
	defer c.c.Close()
	for i := 0; i < n; i++ {
		if _, err := c.do("SET", fmt.Sprintf("pre:%d", i), strings.Repeat("v", 64+i%200)); err != nil {
			return err
		}
	}
	return nil
}

// load is the client goroutines.
type load struct {
	requests, failures atomic.Int64
	pending            atomic.Int64 // sent, reply not read yet
	mu                 sync.Mutex
	first              error
	done               chan struct{}
	wg                 sync.WaitGroup
	once               sync.Once
}

func startLoad(port, n int, pause time.Duration) *load {
	l := &load{done: make(chan struct{})}
	for i := 0; i < n; i++ {
		l.wg.Add(1)
		go l.client(port, i, pause)
	}
	return l
}

func (l *load) fail(err error) {
	l.failures.Add(1)
	l.mu.Lock()
	if l.first == nil {
		l.first = err
	}
	l.mu.Unlock()
}

func (l *load) firstErr() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.first
}

func (l *load) stop() {
	l.once.Do(func() { close(l.done) })
	l.wg.Wait()
}

// client runs SET k v, GET k (must be v), INCR counter (must be one more
// than the last) until stopped; one connection for its whole life, which
// must survive every cycle.
func (l *load) client(port, id int, pause time.Duration) {
	defer l.wg.Done()
	c, err := dial(port)
	if err != nil {
		l.fail(fmt.Errorf("client %d: %w", id, err))
		return
	}
	defer c.c.Close()
	counter := fmt.Sprintf("counter:%d", id)
	do := func(want func(string) error, args ...string) bool {
		l.pending.Add(1)
		got, err := c.do(args...)
		l.pending.Add(-1)
		l.requests.Add(1)
		if err == nil {
			err = want(got)
		}
		if err != nil {
			l.fail(fmt.Errorf("client %d: %w", id, err))
			return false
		}
		return true
	}
	var last int64
	for i := 0; ; i++ {
		select {
		case <-l.done:
			return
		default:
		}
		key := fmt.Sprintf("k:%d:%d", id, i%1000)
		val := fmt.Sprintf("v:%d:%d", id, i)
		ok := do(func(s string) error {
			if s != "OK" {
				return fmt.Errorf("SET %s: %q", key, s)
			}
			return nil
		}, "SET", key, val) &&
			do(func(s string) error {
				if s != val {
					return fmt.Errorf("GET %s: %q, want %q", key, s, val)
				}
				return nil
			}, "GET", key) &&
			do(func(s string) error {
				n, err := strconv.ParseInt(s, 10, 64)
				if err != nil || n != last+1 {
					return fmt.Errorf("INCR %s: %q, want %d", counter, s, last+1)
				}
				last = n
				return nil
			}, "INCR", counter)
		if !ok {
			return // the connection's state is unknown now
		}
		time.Sleep(pause)
	}
}

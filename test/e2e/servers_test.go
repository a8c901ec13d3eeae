package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	tcp_stream "github.com/checkpoint-restore/go-criu/v8/crit/images/tcp-stream"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/testutil"
	"golang.org/x/sys/unix"
)

// Real servers, each with clients that keep their connections across
// the checkpoint: the server's tree is dumped with --tcp-established (and
// so killed), restored with --tcp-established, and the clients go on on
// the same connections as if nothing happened. One client of each server
// is idle from the dump to the end of the restore, another keeps making
// requests all along: the network lock (on by default) drops its
// segments while the server is gone, so that they are retransmitted to
// the restored socket instead of being answered by a reset.

// serverRoundTrip dumps the tree of v with its connections, checks the
// images, restores it and returns the bytes the server's connections had
// in their send queues at the dump and the restored tree; it logs the
// figures.
func serverRoundTrip(t *testing.T, v *testutil.Victim) (int, []testutil.Task) {
	t.Helper()
	tree := testutil.TrackTree(t, v.Pid)
	t.Logf("server tree:\n%s", testutil.FormatTree(tree))
	dir := t.TempDir()
	r := testutil.Dump(t, v.Pid, dir, "--tcp-established")
	v.Reap(t)
	testutil.ReapTasks(t, testutil.Pids(tree[1:]))
	size := dirSize(t, dir)
	outq := logStreams(t, dir)
	start := time.Now()
	testutil.RestoreDetached(t, dir, v, "--tcp-established")
	got := waitAppTree(t, v.Pid, dir, tree, 5*time.Second)
	testutil.Track(t, testutil.Pids(got[1:]), v.Pid)
	took := time.Since(start)
	// After the restore: busy clients wait for the server meanwhile.
	testutil.CheckImages(t, dir)
	t.Logf("%d process(es), %d thread(s): dump %v, restore %v, images %.1f MiB",
		len(tree), threadCount(tree), r.Took.Round(time.Millisecond), took.Round(time.Millisecond), float64(size)/(1<<20))
	return outq, got
}

func threadCount(tree []testutil.Task) int {
	n := 0
	for _, x := range tree {
		n += x.Threads
	}
	return n
}

// logStreams logs the queues of every TCP connection of a dump and
// returns the bytes the server had in its send queues in all.
func logStreams(t *testing.T, dir string) int {
	t.Helper()
	d, err := images.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	names, _ := filepath.Glob(filepath.Join(dir, "tcp-stream-*.img"))
	if len(names) == 0 {
		t.Fatalf("no tcp-stream image in the dump: the client's connection was not dumped")
	}
	outq := 0
	for _, n := range names {
		es, err := images.ReadAll(d, filepath.Base(n), func() *tcp_stream.TcpStreamEntry { return &tcp_stream.TcpStreamEntry{} })
		if err != nil || len(es) != 1 {
			t.Fatalf("%s: %d entries, %v", filepath.Base(n), len(es), err)
		}
		e := es[0]
		t.Logf("%s: receive queue %d, send queue %d (%d never sent)", filepath.Base(n), e.GetInqLen(), e.GetOutqLen(), e.GetUnsqLen())
		outq += int(e.GetOutqLen())
	}
	return outq
}

// TestServerPythonHTTP: `python3 -m http.server` (a thread per request)
// serves a 200 MiB file to a slow client; the server is dumped mid-way,
// its handler thread blocked in a write with the socket buffers full, and
// restored: the download completes with the file's size and sha256, no
// reset and no byte lost or repeated; a new connection is served too.
func TestServerPythonHTTP(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	const size = 200 << 20
	www := t.TempDir()
	want := writeRandomFile(t, filepath.Join(www, "big.bin"), size)
	if err := os.WriteFile(filepath.Join(www, "hello.txt"), []byte("hello from python\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t, "127.0.0.1")
	v := testutil.StartProgram(t, program(t, "python3"), "-m", "http.server", "--bind", "127.0.0.1", "--directory", www, strconv.Itoa(port))
	waitListening(t, v, port)

	d := startDownload(t, dialServer(t, port), "/big.bin")
	if d.total != size {
		t.Fatalf("Content-Length %d, want %d", d.total, size)
	}
	// First the client stops reading at 32 MiB: the server fills both
	// socket buffers and blocks in its write; it is dumped so, with bytes
	// in its send queue (however slow the machine, it gets there).
	if err := d.read(32<<20, 5*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	waitSendQueue(t, port, d.c.LocalAddr().(*net.TCPAddr).Port)
	if outq, _ := serverRoundTrip(t, v); outq == 0 {
		t.Errorf("the server had nothing queued to the client at the dump, 32 MiB into the download: not mid-way")
	}
	// Then the client reads on, 1 MiB every 20 ms, through a second dump
	// (of the restored server, its connection the one the first restore
	// repaired) and restore.
	rerr := make(chan error, 1)
	go func() { rerr <- d.read(-1, 20*time.Millisecond) }()
	testutil.WaitFor(t, 20*time.Second, "the download to pass 64 MiB", func() bool { return d.progress.Load() >= 64<<20 })
	serverRoundTrip(t, v)
	at := d.progress.Load()
	start := time.Now()
	if err := <-rerr; err != nil {
		t.Fatal(err)
	}
	if d.got != size {
		t.Fatalf("downloaded %d bytes, want %d", d.got, size)
	}
	if got := d.h.Sum(nil); !bytes.Equal(got, want[:]) {
		t.Fatalf("sha256 of the download %x, want the file's %x", got, want)
	}
	t.Logf("download: %d MiB read when the second restore ended, the other %d MiB in %v, sha256 matches; the longest read took %v",
		at>>20, (size-at)>>20, time.Since(start).Round(time.Millisecond), d.maxGap.Round(time.Millisecond))

	// http.server speaks HTTP/1.0: one request per connection.
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/hello.txt", port))
	if err != nil {
		t.Fatalf("a new connection after the restore: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(body) != "hello from python\n" {
		t.Fatalf("GET /hello.txt on a new connection: %q, %v", body, err)
	}
}

// TestServerRedis: redis-server (an event loop on epoll, background
// threads, pipes) with its data set in memory and a client that named its
// connection: after the restore the same connection is the same client
// (id, name), reads every key back and updates them; a new connection
// sees the same data.
func TestServerRedis(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	work := t.TempDir()
	port := freePort(t, "127.0.0.1")
	conf := writeConfig(t, work, "redis.conf", fmt.Sprintf(`bind 127.0.0.1
port %d
protected-mode no
daemonize no
supervised no
save ""
appendonly no
dir %s
logfile ""
databases 2
`, port, work))
	v := testutil.StartProgram(t, program(t, "redis-server"), conf)
	waitListening(t, v, port)

	r := newRESP(dialServer(t, port))
	r.must(t, "CLIENT", "SETNAME", "stasis-client")
	id := r.must(t, "CLIENT", "ID")
	const keys = 2000
	val := func(i int) string { return strings.Repeat(fmt.Sprintf("value-%d;", i), 1+i%50) }
	for i := 0; i < keys; i++ {
		r.must(t, "SET", fmt.Sprintf("key:%d", i), val(i))
	}
	big := strings.Repeat("0123456789abcdef", 1<<18) // 4 MiB
	r.must(t, "SET", "big", big)
	r.must(t, "RPUSH", "list", "a", "b", "c")
	r.must(t, "HSET", "hash", "f1", "v1", "f2", "v2")
	r.must(t, "INCRBY", "counter", "41")
	r.must(t, "SET", "later", "x", "EX", "3600")
	// A second client blocks in BLPOP across the checkpoint: redis keeps
	// it in its list of blocked clients, the client just waits.
	blocked := newRESP(dialServer(t, port))
	if err := blocked.send("BLPOP", "queue", "0"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "redis to count a blocked client", func() bool {
		return strings.Contains(r.must(t, "INFO", "clients"), "blocked_clients:1")
	})
	// A third one INCRs all along: every reply is the one before plus 1.
	q := newRESP(dialServer(t, port))
	busy := startBusy(func(i int64) error {
		got, err := q.do("INCR", "ticks")
		if err == nil && got != strconv.FormatInt(i+1, 10) {
			err = fmt.Errorf("INCR ticks replied %s, want %d", got, i+1)
		}
		return err
	})

	serverRoundTrip(t, v)
	busy.end(t, busy.n.Load())

	// The same connection, the same client.
	if got := r.must(t, "CLIENT", "ID"); got != id {
		t.Errorf("CLIENT ID on the kept connection is %s, was %s: not the same client", got, id)
	}
	if got := r.must(t, "CLIENT", "GETNAME"); got != "stasis-client" {
		t.Errorf("CLIENT GETNAME on the kept connection is %q, want stasis-client", got)
	}
	for i := 0; i < keys; i++ {
		if got := r.must(t, "GET", fmt.Sprintf("key:%d", i)); got != val(i) {
			t.Fatalf("GET key:%d after the restore: %.40q, want %.40q", i, got, val(i))
		}
	}
	if got := r.must(t, "GET", "big"); got != big {
		t.Errorf("GET big after the restore: %d bytes, want %d", len(got), len(big))
	}
	if got := r.must(t, "INCR", "counter"); got != "42" {
		t.Errorf("INCR counter after the restore: %s, want 42", got)
	}
	if got := r.must(t, "LINDEX", "list", "2"); got != "c" {
		t.Errorf("LINDEX list 2: %q, want c", got)
	}
	if got := r.must(t, "HGET", "hash", "f2"); got != "v2" {
		t.Errorf("HGET hash f2: %q, want v2", got)
	}
	if ttl, _ := strconv.Atoi(r.must(t, "TTL", "later")); ttl < 3500 || ttl > 3600 {
		t.Errorf("TTL later: %d, want about 3600", ttl)
	}

	// A new connection sees the same data set.
	n := newRESP(dialServer(t, port))
	if got := n.must(t, "PING"); got != "PONG" {
		t.Errorf("PING on a new connection: %q", got)
	}
	if got := n.must(t, "DBSIZE"); got != strconv.Itoa(keys+6) {
		t.Errorf("DBSIZE on a new connection: %s, want %d", got, keys+6)
	}
	if got := n.must(t, "GET", "counter"); got != "42" {
		t.Errorf("GET counter on a new connection: %s, want 42", got)
	}
	n.must(t, "SET", "after", "restore")
	if got := r.must(t, "GET", "after"); got != "restore" {
		t.Errorf("the kept connection does not see the new connection's key: %q", got)
	}
	n.must(t, "RPUSH", "queue", "job-1")
	if got, err := blocked.reply("BLPOP", 5*time.Second); err != nil || got != "queue job-1" {
		t.Errorf("the client blocked in BLPOP across the checkpoint got %q, %v; want queue job-1", got, err)
	}

	// The restored server forks: BGSAVE writes the data set from a child.
	r.must(t, "BGSAVE")
	testutil.WaitFor(t, 20*time.Second, "the restored redis's BGSAVE child to finish", func() bool {
		return strings.Contains(r.must(t, "INFO", "persistence"), "rdb_bgsave_in_progress:0")
	})
	if info := r.must(t, "INFO", "persistence"); !strings.Contains(info, "rdb_last_bgsave_status:ok") {
		t.Errorf("BGSAVE after the restore failed:\n%s\n%s", info, v.LogTail())
	}
	if st, err := os.Stat(filepath.Join(work, "dump.rdb")); err != nil || st.Size() == 0 {
		t.Errorf("dump.rdb after BGSAVE: %v", err)
	}
}

// TestServerNginx: nginx, a master and one worker sharing the listening
// socket and talking over socketpairs, with a keep-alive client: two
// requests on one connection before the dump, more on the same connection
// after the restore (one for a file created after it), and a new
// connection; the worker logs every request to its access log.
func TestServerNginx(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	work := t.TempDir()
	html := filepath.Join(work, "html")
	if err := os.MkdirAll(html, 0o755); err != nil {
		t.Fatal(err)
	}
	page := func(name string) string { return strings.Repeat("page "+name+"\n", 1000) }
	for _, n := range []string{"a", "b"} {
		if err := os.WriteFile(filepath.Join(html, n+".txt"), []byte(page(n)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	port := freePort(t, "127.0.0.1")
	// user root: the worker must read the test's 0700 temp dirs.
	conf := writeConfig(t, work, "nginx.conf", fmt.Sprintf(`daemon off;
master_process on;
worker_processes 1;
user root;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 64; }
http {
	access_log %[1]s/access.log;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	keepalive_timeout 300s;
	keepalive_requests 1000000;
	server {
		listen 127.0.0.1:%[2]d;
		root %[3]s;
	}
}
`, work, port, html))
	v := testutil.StartProgram(t, sbinProgram(t, "nginx"), "-p", work, "-c", conf, "-e", filepath.Join(work, "error.log"))
	waitListening(t, v, port)
	testutil.WaitFor(t, 10*time.Second, "nginx to have its worker", func() bool {
		ts, err := testutil.Tree(v.Pid)
		return err == nil && len(ts) == 2
	})

	c := dialServer(t, port)
	br := bufio.NewReader(c)
	get := func(path, want string) {
		t.Helper()
		body, err := httpGet(c, br, path)
		if err != nil {
			t.Fatalf("kept connection: %v\n--- error.log ---\n%s", err, readTail(filepath.Join(work, "error.log")))
		}
		if body != want {
			t.Fatalf("GET %s: %d bytes, want %d", path, len(body), len(want))
		}
	}
	get("/a.txt", page("a"))
	get("/b.txt", page("b"))
	// A second keep-alive connection requests all along.
	q := dialServer(t, port)
	qr := bufio.NewReader(q)
	busy := startBusy(func(i int64) error {
		body, err := httpGet(q, qr, "/a.txt")
		if err == nil && body != page("a") {
			err = fmt.Errorf("GET /a.txt: %d bytes, want %d", len(body), len(page("a")))
		}
		return err
	})

	_, tree := serverRoundTrip(t, v)
	busy.end(t, busy.n.Load())
	nbusy := busy.n.Load()

	get("/b.txt", page("b"))
	if err := os.WriteFile(filepath.Join(html, "c.txt"), []byte(page("c")), 0o644); err != nil {
		t.Fatal(err)
	}
	get("/c.txt", page("c"))
	get("/a.txt", page("a"))

	n := dialServer(t, port)
	if body, err := httpGet(n, bufio.NewReader(n), "/c.txt"); err != nil || body != page("c") {
		t.Fatalf("a new connection after the restore: %d bytes, %v", len(body), err)
	}
	testutil.WaitFor(t, 5*time.Second, fmt.Sprintf("the access log to list the %d requests", 6+nbusy), func() bool {
		b, _ := os.ReadFile(filepath.Join(work, "access.log"))
		return bytes.Count(b, []byte("\n")) == 6+int(nbusy)
	})

	// The restored master still commands its worker over their
	// socketpair: a reload (SIGHUP) starts a new worker and the old one
	// closes its idle keep-alive connection cleanly (EOF, no reset) and
	// exits; a graceful stop (SIGQUIT) ends the master with 0.
	old := tree[1].Pid
	v.Signal(t, unix.SIGHUP)
	testutil.WaitFor(t, 10*time.Second, "nginx to replace its worker after SIGHUP", func() bool {
		ts, err := testutil.Tree(v.Pid)
		return err == nil && len(ts) == 2 && ts[1].Pid != old && !ts[1].Zombie()
	})
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if k, err := br.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("the kept connection after the reload: read %d bytes, %v; want EOF from the old worker", k, err)
	}
	n = dialServer(t, port)
	if body, err := httpGet(n, bufio.NewReader(n), "/a.txt"); err != nil || body != page("a") {
		t.Fatalf("a new connection after the reload: %d bytes, %v\n%s", len(body), err, readTail(filepath.Join(work, "error.log")))
	}
	v.Signal(t, unix.SIGQUIT)
	if code := v.Wait(t, 15*time.Second); code != 0 {
		t.Errorf("nginx exited with %d after SIGQUIT, want 0\n%s", code, readTail(filepath.Join(work, "error.log")))
	}
}

// sbinProgram is program for a daemon installed in /usr/sbin, which a
// user's PATH may lack.
func sbinProgram(t *testing.T, name string) string {
	if p := "/usr/sbin/" + name; fileExists(p) {
		return p
	}
	return program(t, name)
}

// readTail is the end of a log file, for failure messages.
func readTail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

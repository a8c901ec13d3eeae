package e2e

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// Helpers of the real-server tests (servers_test.go): clients that speak
// HTTP/1.1 and RESP over one net.Conn the test keeps across the dump and
// the restore, so that a reset, a lost or a duplicated byte shows.

// waitListening waits until a TCP connection to 127.0.0.1:port succeeds,
// failing early if the server exited.
func waitListening(t *testing.T, v *testutil.Victim, port int) {
	t.Helper()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	testutil.WaitFor(t, 20*time.Second, "a server listening on "+addr, func() bool {
		if !testutil.ProcessAlive(v.Pid) {
			t.Fatalf("the server (pid %d) exited before it listened on %s\n%s", v.Pid, addr, v.LogTail())
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	// The probe must not wait in the accept queue at a dump: a listener
	// with connections not yet accepted is refused without
	// --skip-in-flight (nginx's master listens before its worker runs).
	testutil.WaitFor(t, 10*time.Second, "the server to accept the probe on "+addr, func() bool {
		return acceptQueue(t, port) == 0
	})
}

// acceptQueue is the number of connections waiting to be accepted by the
// IPv4 TCP listener on port: the rx_queue of its /proc/net/tcp line.
func acceptQueue(t *testing.T, port int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	suffix := fmt.Sprintf(":%04X", port)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 5 || f[3] != "0A" || !strings.HasSuffix(f[1], suffix) {
			continue
		}
		_, rx, _ := strings.Cut(f[4], ":")
		n, err := strconv.ParseInt(rx, 16, 64)
		if err != nil {
			t.Fatalf("/proc/net/tcp: %q", line)
		}
		return int(n)
	}
	t.Fatalf("/proc/net/tcp lists no listener on port %d", port)
	return 0
}

// dialServer connects to 127.0.0.1:port; the test closes the connection.
func dialServer(t *testing.T, port int) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// writeRandomFile writes size pseudo-random (incompressible) bytes to
// path and returns their sha256.
func writeRandomFile(t *testing.T, path string, size int64) [sha256.Size]byte {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	rng := rand.NewChaCha8([32]byte{'s', 't', 'a', 's', 'i', 's'})
	if _, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(rng, size)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	var sum [sha256.Size]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// dirSize is the total size of the files of dir (an images dir).
func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range ents {
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
			n += info.Size()
		}
	}
	return n
}

// download is one HTTP GET whose body the test reads at its own pace: a
// slow reader leaves the rest in the server's socket and its send loop
// blocked, which is what the dump must catch.
type download struct {
	c      net.Conn
	body   io.ReadCloser
	total  int64 // Content-Length
	got    int64
	h      hash.Hash
	chunks int
	// For a test that reads in another goroutine.
	progress atomic.Int64 // = got
	maxGap   time.Duration
}

// startDownload sends GET path on c and reads the response head.
func startDownload(t *testing.T, c net.Conn, path string) *download {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+c.RemoteAddr().String()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := req.Write(c); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(c, 64<<10), req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.ContentLength <= 0 {
		t.Fatalf("GET %s: %s, Content-Length %d", path, resp.Status, resp.ContentLength)
	}
	return &download{c: c, body: resp.Body, total: resp.ContentLength, h: sha256.New()}
}

// read reads the body until it has n bytes in all (or its end, n < 0),
// 64 KiB at a time with a pause after each chunk.
func (d *download) read(n int64, pause time.Duration) error {
	if n < 0 || n > d.total {
		n = d.total
	}
	buf := make([]byte, 64<<10)
	for d.got < n {
		d.c.SetDeadline(time.Now().Add(requestTimeout))
		start := time.Now()
		k, err := d.body.Read(buf[:min(int64(len(buf)), n-d.got)])
		d.maxGap = max(d.maxGap, time.Since(start))
		d.h.Write(buf[:k])
		d.got += int64(k)
		d.progress.Store(d.got)
		if err != nil && (err != io.EOF || d.got < n) {
			return fmt.Errorf("download: read after %d of %d bytes: %w", d.got, d.total, err)
		}
		if d.chunks++; pause > 0 && d.chunks%16 == 0 {
			time.Sleep(pause)
		}
	}
	return nil
}

// requestTimeout bounds one request of a client, or one read of a
// download. It is long: a busy client's request spans the checkpoint -
// the dump and the restore (seconds each on a loaded machine) and then
// the sender's next retransmission, whose backoff doubles meanwhile
// (0.2, 0.4, ... 6.4 s): 10 s of checkpoint may mean 12 s more of it.
const requestTimeout = 60 * time.Second

// httpGet sends GET path on a keep-alive connection and returns the body
// of a 200 response; br must be the one reader of c across requests.
func httpGet(c net.Conn, br *bufio.Reader, path string) (string, error) {
	req, err := http.NewRequest("GET", "http://"+c.RemoteAddr().String()+path, nil)
	if err != nil {
		return "", err
	}
	c.SetDeadline(time.Now().Add(requestTimeout))
	if err := req.Write(c); err != nil {
		return "", fmt.Errorf("GET %s: send: %w", path, err)
	}
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return "", fmt.Errorf("GET %s: read the response: %w", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("GET %s: read the body: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	if resp.Close {
		return "", fmt.Errorf("GET %s: the server closes the connection (Connection: close)", path)
	}
	return string(b), nil
}

// resp is a RESP (redis protocol) client over one connection.
type resp struct {
	c  net.Conn
	br *bufio.Reader
}

func newRESP(c net.Conn) *resp { return &resp{c: c, br: bufio.NewReader(c)} }

// do sends a command and returns its reply: a simple string or integer as
// text, a bulk string's bytes, "(nil)" for a null bulk; an error reply is
// an error.
func (r *resp) do(args ...string) (string, error) {
	if err := r.send(args...); err != nil {
		return "", err
	}
	return r.reply(args[0], requestTimeout)
}

// send sends a command without waiting for its reply.
func (r *resp) send(args ...string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	r.c.SetWriteDeadline(time.Now().Add(requestTimeout))
	if _, err := io.WriteString(r.c, b.String()); err != nil {
		return fmt.Errorf("%s: send: %w", args[0], err)
	}
	return nil
}

// reply reads the reply to the command cmd; an array is its elements
// joined by spaces.
func (r *resp) reply(cmd string, timeout time.Duration) (string, error) {
	r.c.SetReadDeadline(time.Now().Add(timeout))
	line, err := r.br.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("%s: read the reply: %w", cmd, err)
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("%s: empty reply line", cmd)
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("%s: server error %q", cmd, line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", fmt.Errorf("%s: bad bulk length %q", cmd, line)
		}
		if n < 0 {
			return "(nil)", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r.br, buf); err != nil {
			return "", fmt.Errorf("%s: read %d bulk bytes: %w", cmd, n, err)
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "(nil)", err
		}
		elems := make([]string, n)
		for i := range elems {
			if elems[i], err = r.reply(cmd, timeout); err != nil {
				return "", err
			}
		}
		return strings.Join(elems, " "), nil
	}
	return "", fmt.Errorf("%s: reply %q not handled by this client", cmd, line)
}

// must is do that fails the test on error.
func (r *resp) must(t *testing.T, args ...string) string {
	t.Helper()
	s, err := r.do(args...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// writeConfig writes a server's config file into dir.
func writeConfig(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// busyClient makes one request after another on a connection of its own,
// from before the dump until after the restore: the network lock drops
// what it sends while the server is frozen or gone, and the peer's
// retransmissions reach the restored socket, never a reset.
type busyClient struct {
	n      atomic.Int64 // requests done
	maxGap atomic.Int64 // the longest request, in ns: the client's stall
	stop   chan struct{}
	done   chan error
}

// startBusy runs do(0), do(1), ... until end; do checks its reply.
func startBusy(do func(i int64) error) *busyClient {
	b := &busyClient{stop: make(chan struct{}), done: make(chan error, 1)}
	go func() {
		for i := int64(0); ; i++ {
			select {
			case <-b.stop:
				b.done <- nil
				return
			default:
			}
			start := time.Now()
			if err := do(i); err != nil {
				b.done <- fmt.Errorf("request %d: %w", i, err)
				return
			}
			if gap := int64(time.Since(start)); gap > b.maxGap.Load() {
				b.maxGap.Store(gap)
			}
			b.n.Add(1)
		}
	}()
	return b
}

// end waits until the client has made 10 more requests than at (a count
// taken once the server was back), stops it and fails the test if a
// request failed.
func (b *busyClient) end(t *testing.T, at int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for b.n.Load() < at+10 && time.Now().Before(deadline) {
		select {
		case err := <-b.done:
			t.Fatalf("the busy client: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	close(b.stop)
	if err := <-b.done; err != nil {
		t.Fatalf("the busy client: %v", err)
	}
	if n := b.n.Load(); n < at+10 {
		t.Fatalf("the busy client made %d requests in all, %d at the restore: stuck after it", n, at)
	}
	t.Logf("busy client: %d requests, the longest took %v", b.n.Load(), time.Duration(b.maxGap.Load()).Round(time.Millisecond))
}

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
		d.c.SetDeadline(time.Now().Add(30 * time.Second))
		k, err := d.body.Read(buf[:min(int64(len(buf)), n-d.got)])
		d.h.Write(buf[:k])
		d.got += int64(k)
		if err != nil && (err != io.EOF || d.got < n) {
			return fmt.Errorf("download: read after %d of %d bytes: %w", d.got, d.total, err)
		}
		if d.chunks++; pause > 0 && d.chunks%16 == 0 {
			time.Sleep(pause)
		}
	}
	return nil
}

// httpGet sends GET path on a keep-alive connection and returns the body
// of a 200 response; br must be the one reader of c across requests.
func httpGet(c net.Conn, br *bufio.Reader, path string) (string, error) {
	req, err := http.NewRequest("GET", "http://"+c.RemoteAddr().String()+path, nil)
	if err != nil {
		return "", err
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
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
	return r.reply(args[0], 10*time.Second)
}

// send sends a command without waiting for its reply.
func (r *resp) send(args ...string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	r.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
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

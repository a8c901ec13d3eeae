package pagesrv

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"testing"
)

// fakeSource serves pid 9's lazy pages 0x10000-0x14000, page i filled with i.
type fakeSource struct{}

func (fakeSource) ReadPages(pid int, vaddr uint64, buf []byte) (int, error) {
	if pid != 9 || vaddr < 0x10000 || vaddr >= 0x14000 {
		return 0, nil
	}
	n := min(len(buf)/pageSize, int(0x14000-vaddr)/pageSize)
	for i := 0; i < n; i++ {
		copy(buf[i*pageSize:(i+1)*pageSize], bytes.Repeat([]byte{byte(vaddr/pageSize) + byte(i)}, pageSize))
	}
	return n, nil
}

func lazyPair(t *testing.T) (*LazyClient, chan error) {
	a, b := net.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := ServeLazy(b, fakeSource{}, nil)
		b.Close()
		done <- err
	}()
	return &LazyClient{conn: a, r: newReader(a), addr: "pipe"}, done
}

func TestLazySession(t *testing.T) {
	c, done := lazyPair(t)
	buf := make([]byte, 8*pageSize)
	n, err := c.Get(9, 0x12000, buf)
	if err != nil || n != 2 {
		t.Fatalf("Get: %d pages, %v; want the 2 left in the run", n, err)
	}
	if buf[0] != 0x12 || buf[pageSize] != 0x13 {
		t.Fatalf("pages %#x %#x", buf[0], buf[pageSize])
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("ServeLazy: %v", err)
	}
}

// TestLazyDropped: a daemon gone mid-way fails the server's session, and a
// server gone fails the daemon's request with ErrClosed.
func TestLazyDropped(t *testing.T) {
	c, done := lazyPair(t)
	if _, err := c.Get(9, 0x10000, make([]byte, pageSize)); err != nil {
		t.Fatal(err)
	}
	c.Abort()
	if err := <-done; !errors.Is(err, ErrNotFlushed) {
		t.Fatalf("ServeLazy: %v, want ErrNotFlushed", err)
	}
	a, b := net.Pipe()
	b.Close()
	c = &LazyClient{conn: a, r: newReader(a), addr: "pipe"}
	if _, err := c.Get(9, 0x10000, make([]byte, pageSize)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get from a closed server: %v, want ErrClosed", err)
	}
}

func newReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }

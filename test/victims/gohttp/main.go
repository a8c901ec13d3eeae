// Command gohttp is an e2e victim: a Go net/http server, which Go >= 1.24
// listens with an MPTCP socket (IPPROTO_MPTCP, 262) by default where the
// kernel has MPTCP (test/e2e, test/victims/README.md).
//
//	gohttp READY ADDR_FILE
//
// It listens on 127.0.0.1:0 with http.Server's default ListenConfig,
// writes the address it got to ADDR_FILE, then creates READY. GET /count
// answers "count N", N the requests served so far, 1 for the first. On
// SIGTERM it checks itself: the listener is still the socket it made
// (same local address, same protocol as before), the server still
// serves, and prints "PASS" and exits 0, or "FAIL: ..." lines and exits 1.
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	served   atomic.Uint64
	failures int
)

func say(format string, args ...any) {
	syscall.Write(1, []byte(fmt.Sprintf(format, args...)+"\n"))
}

func fail(format string, args ...any) {
	failures++
	syscall.Write(2, []byte("FAIL: "+fmt.Sprintf(format, args...)+"\n"))
}

func setupFail(format string, args ...any) {
	syscall.Write(2, []byte("SETUP: "+fmt.Sprintf(format, args...)+"\n"))
	os.Exit(2)
}

// protocol is SO_PROTOCOL of the listener: 262 when Go listened with MPTCP.
func protocol(l net.Listener) (int, error) {
	rc, err := l.(*net.TCPListener).SyscallConn()
	if err != nil {
		return 0, err
	}
	var p int
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		p, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, 0x26 /* SO_PROTOCOL */)
	}); err != nil {
		return 0, err
	}
	return p, gerr
}

func main() {
	if len(os.Args) != 3 {
		setupFail("usage: gohttp READY ADDR_FILE")
	}
	var lc net.ListenConfig // the default: MPTCP on Go >= 1.24
	l, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		setupFail("listen: %v", err)
	}
	proto, err := protocol(l)
	if err != nil {
		setupFail("SO_PROTOCOL: %v", err)
	}
	say("gohttp: listening on %s, protocol %d", l.Addr(), proto)
	mux := http.NewServeMux()
	mux.HandleFunc("/count", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "count %d", served.Add(1))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	if err := os.WriteFile(os.Args[2], []byte(l.Addr().String()), 0o644); err != nil {
		setupFail("write %s: %v", os.Args[2], err)
	}
	if err := os.WriteFile(os.Args[1], nil, 0o644); err != nil {
		setupFail("ready: %v", err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	<-sig
	if p, err := protocol(l); err != nil || p != proto {
		fail("listener protocol %d (%v), want %d", p, err, proto)
	}
	before := served.Load()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + l.Addr().String() + "/count")
	if err != nil {
		fail("GET /count from inside: %v", err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("count %d", before+1); string(b) != want {
			fail("GET /count: %q, want %q", b, want)
		}
	}
	if failures > 0 {
		os.Exit(1)
	}
	say("PASS")
	os.Exit(0)
}

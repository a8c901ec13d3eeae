package e2e

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// startGoHTTP starts the Go net/http server victim and returns it with
// its address.
func startGoHTTP(t *testing.T) (*testutil.Victim, string) {
	t.Helper()
	work := t.TempDir()
	ready, addrFile := filepath.Join(work, "ready"), filepath.Join(work, "addr")
	v := testutil.StartProgram(t, testutil.BuildGoVictim(t, "gohttp"), ready, addrFile)
	v.Ready = ready
	v.WaitReady(t)
	b, err := os.ReadFile(addrFile)
	if err != nil {
		t.Fatal(err)
	}
	return v, string(b)
}

// getCount fetches /count from the server as a client outside it, on a
// connection of its own that it closes.
func getCount(t *testing.T, addr, want string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/count")
	if err != nil {
		t.Fatalf("GET http://%s/count: %v", addr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if string(b) != want {
		t.Fatalf("GET http://%s/count: %q, want %q", addr, b, want)
	}
}

// TestGoHTTPServerMPTCP: a Go net/http server, whose listener Go >= 1.24
// makes an MPTCP socket (IPPROTO_MPTCP), is dumped, killed and restored,
// and serves a client outside before and after (gohttp checks from
// inside that its listener kept its protocol). criu 4.2 refuses it
// ("Unsupported proto 262"); its result is logged.
func TestGoHTTPServerMPTCP(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	v, addr := startGoHTTP(t)
	if !strings.Contains(v.LogTail(), "protocol 262") {
		t.Logf("the listener is not MPTCP here (no MPTCP in the kernel?): %s", v.LogTail())
	}
	getCount(t, addr, "count 1")
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	testutil.CheckImages(t, dir)
	testutil.RestoreDetached(t, dir, v)
	getCount(t, addr, "count 2")
	v.TermAndCheck(t)

	w, _ := startGoHTTP(t)
	t.Logf("criu 4.2 on gohttp: %s", testutil.CriuOutcome(t, w))
}

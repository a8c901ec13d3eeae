package e2e

import (
	"net"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// moveNet is two "hosts", A and B, and a client C, each a network
// namespace: C holds a bridge with a veth to A and one to B. The
// server's address starts on A.
type moveNet struct {
	a, b, c    netns.NsHandle
	ha, hb, hc *netlink.Handle
}

const (
	moveClient = "10.77.0.1"
	moveServer = "10.77.0.2"
)

func newMoveNet(t *testing.T) *moveNet {
	t.Helper()
	n := &moveNet{}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []*netns.NsHandle{&n.a, &n.b, &n.c} {
		if *ns, err = netns.New(); err != nil {
			t.Fatalf("new network namespace: %v", err)
		}
	}
	if err := netns.Set(orig); err != nil {
		t.Fatalf("back to the test's network namespace: %v", err) // the thread stays locked: discarded
	}
	orig.Close()
	runtime.UnlockOSThread()
	t.Cleanup(func() { n.a.Close(); n.b.Close(); n.c.Close() })
	for _, x := range []struct {
		h  **netlink.Handle
		ns netns.NsHandle
	}{{&n.ha, n.a}, {&n.hb, n.b}, {&n.hc, n.c}} {
		if *x.h, err = netlink.NewHandleAt(x.ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup((*x.h).Close)
	}
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	must("add bridge", n.hc.LinkAdd(br))
	for _, host := range []struct {
		name string
		ns   netns.NsHandle
		h    *netlink.Handle
	}{{"va", n.a, n.ha}, {"vb", n.b, n.hb}} {
		must("add veth "+host.name, n.hc.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host.name + "-br"},
			PeerName: host.name, PeerNamespace: netlink.NsFd(int(host.ns))}))
		port, err := n.hc.LinkByName(host.name + "-br")
		must("veth", err)
		must("enslave", n.hc.LinkSetMaster(port, br))
		must("up", n.hc.LinkSetUp(port))
		l, err := host.h.LinkByName(host.name)
		must("peer", err)
		must("up", host.h.LinkSetUp(l))
	}
	must("up bridge", n.hc.LinkSetUp(br))
	must("client address", n.hc.AddrAdd(br, mustAddr(t, moveClient+"/24")))
	va, err := n.ha.LinkByName("va")
	must("va", err)
	must("server address on A", n.ha.AddrAdd(va, mustAddr(t, moveServer+"/24")))
	return n
}

// newLoopbackNS makes a network namespace with its loopback up.
func newLoopbackNS(t *testing.T) netns.NsHandle {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netns.New()
	if err != nil {
		t.Fatalf("new network namespace: %v", err)
	}
	if err := netns.Set(orig); err != nil {
		t.Fatalf("back to the test's network namespace: %v", err) // the thread stays locked: discarded
	}
	orig.Close()
	runtime.UnlockOSThread()
	t.Cleanup(func() { ns.Close() })
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("loopback up: %v", err)
	}
	return ns
}

func mustAddr(t *testing.T, s string) *netlink.Addr {
	a, err := netlink.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// in runs fn on a thread in ns: sockets it creates and processes it
// starts (victims, stasis) live there.
func in(t *testing.T, ns netns.NsHandle, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
	}()
	fn()
}

// moveAddress moves the server's address from A to B, as a failover
// would, and makes the client forget A's MAC (a real move would send a
// gratuitous ARP).
func (n *moveNet) moveAddress(t *testing.T) {
	t.Helper()
	va, _ := n.ha.LinkByName("va")
	vb, _ := n.hb.LinkByName("vb")
	if err := n.ha.AddrDel(va, mustAddr(t, moveServer+"/24")); err != nil {
		t.Fatalf("remove the address from A: %v", err)
	}
	if err := n.hb.AddrAdd(vb, mustAddr(t, moveServer+"/24")); err != nil {
		t.Fatalf("add the address to B: %v", err)
	}
	br, _ := n.hc.LinkByName("br0")
	neighs, err := n.hc.NeighList(br.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, ne := range neighs {
		if ne.IP.Equal(net.ParseIP(moveServer)) {
			if err := n.hc.NeighDel(&ne); err != nil {
				t.Fatalf("forget the server's MAC: %v", err)
			}
		}
	}
}

func locksIn(t *testing.T, ns netns.NsHandle, pid int) []string {
	t.Helper()
	nft, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	return locksOf(t, nft, pid)
}

// TestTCPMoveHost (issue 5, test 2): a TCP server on host A with a
// client on C is dumped in A, its address moves from A to B, and it is
// restored in B: the client keeps its connection, every byte once and in
// order, no reset, including the bytes it sent while the server was
// between hosts (dropped by the lock on A, then on B while restoring).
func TestTCPMoveHost(t *testing.T) {
	testutil.RequireRoot(t)
	n := newMoveNet(t)
	port := 20000 + time.Now().Nanosecond()%20000
	var v *testutil.Victim
	in(t, n.a, func() {
		v = testutil.StartVictim(t, "tcpsrv", moveServer, strconv.Itoa(port), strconv.Itoa(tcpRxTotal), strconv.Itoa(tcpTxTotal),
			strconv.Itoa(tcpPhaseA), strconv.Itoa(tcpResumeTx))
		v.WaitReady(t)
	})
	var tc *tcpClient
	in(t, n.c, func() { tc = dialTCPServer(t, moveServer, port) })
	// As startTCPServer: both streams, then the server's queues full.
	werr := make(chan error, 1)
	go func() { werr <- tc.write(tcpPhaseA) }()
	if err := tc.read(tcpPhaseA); err != nil {
		t.Fatal(err)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if err := tc.write(tcpPhaseB); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "the server's kernel acknowledges the client's bytes", func() bool { return tc.outq(t) == 0 })

	dir := t.TempDir()
	in(t, n.a, func() { testutil.Dump(t, v.Pid, dir, "--tcp-established") })
	v.Reap(t)
	if l := locksIn(t, n.a, v.Pid); len(l) != 1 || !isPersistentLock(l[0], v.Pid) {
		t.Fatalf("locks on A after the dump: %v", l)
	}
	sendLocked(t, tc)
	n.moveAddress(t)
	in(t, n.b, func() { testutil.RestoreDetached(t, dir, v, "--tcp-established") })
	if ns, err := netns.GetFromPid(v.Pid); err != nil || !ns.Equal(n.b) {
		t.Fatalf("restored pid %d is not in host B's network namespace (%v)", v.Pid, err)
	} else {
		ns.Close()
	}
	if l := locksIn(t, n.b, v.Pid); len(l) != 0 {
		t.Errorf("locks left on B after the restore: %v", l)
	}
	// A keeps its lock (harmless: the address has left): its admin
	// removes it (README), as criu's.
	t.Logf("locks left on A: %v", locksIn(t, n.a, v.Pid))
	waitAcked(t, tc)
	finishStream(t, tc)
	v.TermAndCheck(t)
}

package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/linux"
	"github.com/stasis-cr/stasis/internal/netlock"
	"github.com/stasis-cr/stasis/internal/testutil"
)

// netContainer is a container with a network namespace of its own: the
// netinit victim under `unshare --net --pid --fork --uts --ipc`, whose
// network the test sets up from outside as a runtime does: lo up, a veth
// eth0 whose outside end is in a bridge of the test's namespace (the
// bridge holds the outside address, so it outlives the container), an
// address, a route, a sysctl, an nftables table.
type netContainer struct {
	*container
	subnet      string // "10.213.N": .1 the bridge, .2 eth0
	bridge, out string // names in the test's namespace
	go_         string // the file that lets the victim go on
}

var netSeq atomic.Int32

// startNetContainer starts the container; unshareFlags come before
// unshare's own (--user --map-root-user for a user namespace too).
func startNetContainer(t *testing.T, unshareFlags ...string) *netContainer {
	t.Helper()
	testutil.RequireRoot(t)
	bin := testutil.BuildVictim(t, "netinit")
	unshare := testutil.RequireTool(t, "unshare")
	if err := testutil.CloseInheritedFDs(); err != nil {
		t.Fatal(err)
	}
	n := (os.Getpid()+int(netSeq.Add(1))*37)%250 + 1
	dir := t.TempDir()
	c := &netContainer{
		container: &container{log: filepath.Join(dir, "netinit.log"), exited: make(chan struct{})},
		subnet:    fmt.Sprintf("10.213.%d", n),
		bridge:    fmt.Sprintf("sbr%d-%d", os.Getpid()%10000, n),
		out:       fmt.Sprintf("svh%d-%d", os.Getpid()%10000, n),
		go_:       filepath.Join(dir, "go"),
	}
	ready := filepath.Join(dir, "ready")
	f, err := os.OpenFile(c.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	args := append(unshareFlags, "--net", "--pid", "--fork", "--uts", "--ipc", bin, ready, c.go_)
	c.unshare = exec.Command(unshare, args...)
	t.Cleanup(func() { // after the container's end (start's cleanup)
		if l, err := netlink.LinkByName(c.bridge); err == nil {
			netlink.LinkDel(l)
		}
		if l, err := netlink.LinkByName(c.out); err == nil {
			netlink.LinkDel(l)
		}
	})
	if err := c.start(t, f); err != nil {
		t.Fatal(err)
	}
	self, _ := os.Readlink("/proc/thread-self/ns/net")
	testutil.WaitFor(t, 10*time.Second, "the container's init", func() bool {
		kids := testutil.Children(c.unshare.Process.Pid)
		if len(kids) != 1 {
			return false
		}
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", kids[0]))
		c.init = kids[0]
		return l != "" && l != self
	})
	c.setUp(t)
	if err := os.WriteFile(c.go_, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the container's init to be ready", func() bool {
		_, err := os.Stat(ready)
		return err == nil
	})
	t.Logf("container init: host pid %d\n%s", c.init, c.logText())
	return c
}

// setUp makes the container's network from outside.
func (c *netContainer) setUp(t *testing.T) {
	t.Helper()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("set up the container's network: %s: %v", what, err)
		}
	}
	ns, err := netns.GetFromPid(c.init)
	must("its namespace", err)
	defer ns.Close()
	in, err := netlink.NewHandleAt(ns)
	must("netlink", err)
	defer in.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: c.bridge}}
	must("bridge", netlink.LinkAdd(br))
	addr, _ := netlink.ParseAddr(c.subnet + ".1/24")
	must("bridge address", netlink.AddrAdd(br, addr))
	must("bridge up", netlink.LinkSetUp(br))
	must("veth", netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: c.out, MasterIndex: br.Index},
		PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ns))}))
	out, err := netlink.LinkByName(c.out)
	must("outside end", err)
	must("outside end up", netlink.LinkSetUp(out))
	lo, err := in.LinkByName("lo")
	must("lo", err)
	must("lo up", in.LinkSetUp(lo))
	eth0, err := in.LinkByName("eth0")
	must("eth0", err)
	addr, _ = netlink.ParseAddr(c.subnet + ".2/24")
	must("eth0 address", in.AddrAdd(eth0, addr))
	must("eth0 up", in.LinkSetUp(eth0))
	_, dst, _ := net.ParseCIDR("10.214.0.0/24")
	must("route", in.RouteAdd(&netlink.Route{Dst: dst, Gw: net.ParseIP(c.subnet + ".1"), LinkIndex: eth0.Attrs().Index}))
	must("sysctl", linux.InNamespace(c.init, unix.CLONE_NEWNET, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/conf/eth0/forwarding", []byte("1"), 0)
	}))
	nft, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	must("nftables", err)
	tb := nft.AddTable(&nftables.Table{Name: "ct-filter", Family: nftables.TableFamilyINet})
	ch := nft.AddChain(&nftables.Chain{Name: "in", Table: tb, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter})
	nft.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(9999)},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}})
	must("nftables table", nft.Flush())
}

// checkNet checks from outside what the victim cannot see: the table and
// its rule in the restored namespace of pid, the outside end in its
// bridge.
func (c *netContainer) checkNet(t *testing.T, pid int) {
	t.Helper()
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	nft, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	tables, err := nft.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, tb := range tables {
		if tb.Name != "ct-filter" {
			continue
		}
		found = true
		rules, err := nft.GetRules(tb, &nftables.Chain{Name: "in", Table: tb})
		if err != nil || len(rules) != 1 || len(rules[0].Exprs) != 6 {
			t.Errorf("restored table ct-filter: rules %v (%v), want the one with 6 expressions", rules, err)
		}
	}
	if !found {
		t.Errorf("restored namespace has no table ct-filter: %v", tables)
	}
	out, err := netlink.LinkByName(c.out)
	br, berr := netlink.LinkByName(c.bridge)
	if err != nil || berr != nil || out.Attrs().MasterIndex != br.Attrs().Index || out.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("outside end %s: %v (%v), want up in bridge %s", c.out, out, err, c.bridge)
	}
}

// echo writes msg on conn and reads it back.
func echo(t *testing.T, conn net.Conn, msg []byte) {
	t.Helper()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Write(msg); err != nil {
		t.Fatalf("write to the container: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, got); err != nil {
		t.Fatalf("read the echo from the container: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo %q, want %q", got, msg)
	}
}

// waitGone waits for the container's end and for its veth's outside end
// to go with its namespace, which the kernel destroys asynchronously.
func (c *netContainer) waitGone(t *testing.T) {
	t.Helper()
	c.container.waitGone(t)
	testutil.WaitFor(t, 10*time.Second, "the veth's outside end to go with the namespace", func() bool {
		_, err := netlink.LinkByName(c.out)
		return err != nil
	})
}

func (c *netContainer) restoreArgs() []string {
	return []string{"--tcp-established", "--external", fmt.Sprintf("veth[eth0]:%s@%s", c.out, c.bridge)}
}

// restoreNet restores dir with stasis and returns the restored init.
func restoreNet(t *testing.T, dir string, extra ...string) int {
	t.Helper()
	pidfile := filepath.Join(t.TempDir(), "pid")
	args := append([]string{"restore", "-D", dir, "-d", "--pidfile", pidfile, "-v4", "-o", filepath.Join(dir, "restore.log")}, extra...)
	r := testutil.Run(t, 30*time.Second, args...)
	if r.Code != 0 {
		t.Fatalf("restore of the container failed\n%s\n%s", r, testutil.CriuErrors(nsLogText(filepath.Join(dir, "restore.log"))))
	}
	t.Logf("restored in %v", r.Took.Round(time.Millisecond))
	return readPidfile(t, pidfile)
}

// TestContainerNet: a container with its own network namespace (and pid,
// uts, ipc), dumped from the host with --tcp-established while a client
// outside, on the bridge of its veth's outside end, holds a connection
// to its server: after the restore (--external veth[eth0]:OUT@BRIDGE)
// the connection goes on with no reset and every byte in order; the
// victim finds its addresses, routes, sysctls and sockets as they were,
// and the test its nftables table and the veth's outside end in the
// bridge.
func TestContainerNet(t *testing.T) {
	t.Parallel()
	testContainerNet(t)
}

// TestContainerNetUserNS is TestContainerNet for a container in a user
// namespace of its own too. criu 4.2 cannot restore its veth ("Can't
// restore link": EPERM, it makes links from inside the user namespace);
// stasis makes them from outside, as it does every link.
func TestContainerNetUserNS(t *testing.T) {
	t.Parallel()
	testContainerNet(t, "--user", "--map-root-user")
}

func testContainerNet(t *testing.T, unshareFlags ...string) {
	c := startNetContainer(t, unshareFlags...)
	want := nsPids(t, c.init)
	conn, err := net.DialTimeout("tcp", c.subnet+".2:7000", 10*time.Second)
	if err != nil {
		t.Fatalf("connect to the container: %v\n%s", err, c.logText())
	}
	defer conn.Close()
	echo(t, conn, []byte("before the dump"))
	dir := t.TempDir()
	testutil.Dump(t, c.init, dir, "--tcp-established")
	c.waitGone(t)
	host := restoreNet(t, dir, c.restoreArgs()...)
	for i := 0; i < 3; i++ {
		echo(t, conn, []byte(strings.Repeat(strconv.Itoa(i), 1000+i)))
	}
	c.checkNet(t, host)
	if len(unshareFlags) > 0 {
		self, _ := os.Readlink("/proc/thread-self/ns/user")
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", host)); err != nil || l == self {
			t.Errorf("restored init %d: user namespace %q (%v), stasis' is %q", host, l, err, self)
		}
	}
	checkRestoredNet(t, c, host, want)
}

// checkRestoredNet is checkRestoredContainer for a container with a
// network namespace too.
func checkRestoredNet(t *testing.T, c *netContainer, host int, want []string) {
	t.Helper()
	self, _ := os.Readlink("/proc/thread-self/ns/net")
	if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", host)); err != nil || l == self {
		t.Errorf("restored init %d: network namespace %q (%v), stasis' is %q", host, l, err, self)
	}
	checkRestoredContainer(t, c.container, host, want)
}

// TestContainerNetCRIU: criu 4.2 dumps the container and stasis
// restores it, then stasis dumps it and criu restores it, the client's
// connection alive across both.
func TestContainerNetCRIU(t *testing.T) {
	t.Parallel()
	c := startNetContainer(t)
	want := nsPids(t, c.init)
	conn, err := net.DialTimeout("tcp", c.subnet+".2:7000", 10*time.Second)
	if err != nil {
		t.Fatalf("connect to the container: %v\n%s", err, c.logText())
	}
	defer conn.Close()
	echo(t, conn, []byte("before criu's dump"))
	criuDir := t.TempDir()
	if r := testutil.RunCRIU(t, 30*time.Second, criuDir, "dump", "-t", strconv.Itoa(c.init), "-D", criuDir, "--tcp-established", "--network-lock", "nftables"); r.Code != 0 {
		t.Fatalf("criu dump failed\n%s", r)
	}
	c.waitGone(t)
	host := restoreNet(t, criuDir, c.restoreArgs()...)
	echo(t, conn, []byte("after stasis restored criu's dump"))
	c.checkNet(t, host)
	c.init = host
	dir := t.TempDir()
	testutil.Dump(t, host, dir, "--tcp-established")
	pidfile := filepath.Join(t.TempDir(), "pid")
	args := append([]string{"restore", "-D", dir, "-d", "--pidfile", pidfile}, c.restoreArgs()...)
	if r := testutil.RunCRIU(t, 30*time.Second, dir, args...); r.Code != 0 {
		t.Fatalf("criu restore of stasis' dump failed\n%s", r)
	}
	host = readPidfile(t, pidfile)
	echo(t, conn, []byte("after criu restored stasis' dump"))
	c.checkNet(t, host)
	checkRestoredNet(t, c, host, want)
}

// TestContainerNetMissingKey: a restore whose veth has no outside name, or
// whose external network namespace has no --inherit-fd, is refused
// naming the key, and leaves nothing: no task, no namespace, no link.
func TestContainerNetMissingKey(t *testing.T) {
	t.Parallel()
	c := startNetContainer(t)
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", c.init), &st); err != nil {
		t.Fatal(err)
	}
	ext := t.TempDir()
	testutil.Dump(t, c.init, ext, "-R", "--external", fmt.Sprintf("net[%d]:ctnet", st.Ino))
	dir := t.TempDir()
	testutil.Dump(t, c.init, dir)
	c.waitGone(t)
	// A veth made with no outside name would be the kernel's vethN; other
	// tests make and remove links meanwhile.
	links := func() int {
		l, _ := netlink.LinkList()
		n := 0
		for _, x := range l {
			if strings.HasPrefix(x.Attrs().Name, "veth") {
				n++
			}
		}
		return n
	}
	before := links()
	msg := testutil.RestoreFail(t, dir)
	if !strings.Contains(msg, "veth eth0") || !strings.Contains(msg, "--veth-pair eth0=") {
		t.Errorf("restore without the veth's outside name: %q, want it to name eth0 and --veth-pair", msg)
	}
	msg = testutil.RestoreFail(t, ext)
	if !strings.Contains(msg, `key "ctnet"`) || !strings.Contains(msg, "--inherit-fd fd[N]:ctnet") {
		t.Errorf("restore without the external namespace: %q, want it to name the key ctnet", msg)
	}
	if after := links(); after != before {
		t.Errorf("%d veth links in the test's namespace after the failed restores, %d before", after, before)
	}
}

// TestNetnsRefused: a network namespace holding what stasis cannot
// restore (an ifb link, an nftables set) fails the dump with an error
// naming it, and the tree runs on untouched.
func TestNetnsRefused(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	for _, tc := range []struct {
		name string
		set  func(t *testing.T, ns netns.NsHandle)
		want string
	}{
		{"ifb link", func(t *testing.T, ns netns.NsHandle) {
			h, err := netlink.NewHandleAt(ns)
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			if err := h.LinkAdd(&netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: "ifb7"}}); err != nil {
				t.Fatal(err)
			}
		}, "link ifb7 (index 2) is ifb: restoring it is not supported"},
		{"nftables set", func(t *testing.T, ns netns.NsHandle) {
			nft, err := nftables.New(nftables.WithNetNSFd(int(ns)))
			if err != nil {
				t.Fatal(err)
			}
			tb := nft.AddTable(&nftables.Table{Name: "sets", Family: nftables.TableFamilyIPv4})
			if err := nft.AddSet(&nftables.Set{Table: tb, Name: "blocked", KeyType: nftables.TypeIPAddr}, nil); err != nil {
				t.Fatal(err)
			}
			if err := nft.Flush(); err != nil {
				t.Fatal(err)
			}
		}, "nftables table ip sets: set blocked: sets and maps are not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := testutil.StartProgram(t, testutil.RequireTool(t, "unshare"), "--net", "sleep", "1000")
			self, _ := os.Readlink("/proc/thread-self/ns/net")
			testutil.WaitFor(t, 5*time.Second, "unshare to enter its namespace and exec sleep", func() bool {
				l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", v.Pid))
				return l != self && testutil.Comm(v.Pid) == "sleep"
			})
			ns, err := netns.GetFromPid(v.Pid)
			if err != nil {
				t.Fatal(err)
			}
			defer ns.Close()
			tc.set(t, ns)
			msg := testutil.DumpFail(t, v.Pid, t.TempDir())
			testutil.AssertContains(t, msg, tc.want, "the tree was resumed")
			assertRunning(t, v.Pid)
		})
	}
}

// TestContainerNetExternal: the runtime's way (runc, podman): the
// container's network namespace belongs to the runtime, which keeps it
// across the checkpoint (here the test holds it open). The dump, told
// --external net[INO]:KEY, writes only the key and leaves the connection
// locked inside the namespace (where no socket answers for it any more);
// the restore gets the namespace as --inherit-fd fd[N]:KEY, the root
// joins it, and the lock there is removed once the connection is back:
// no reset, every byte in order.
func TestContainerNetExternal(t *testing.T) {
	t.Parallel()
	c := startNetContainer(t)
	want := nsPids(t, c.init)
	nsf, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", c.init))
	if err != nil {
		t.Fatal(err)
	}
	defer nsf.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(nsf.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", c.subnet+".2:7000", 10*time.Second)
	if err != nil {
		t.Fatalf("connect to the container: %v\n%s", err, c.logText())
	}
	defer conn.Close()
	echo(t, conn, []byte("before the dump"))
	dir := t.TempDir()
	testutil.Dump(t, c.init, dir, "--tcp-established", "--external", fmt.Sprintf("net[%d]:ctnet", st.Ino))
	c.container.waitGone(t) // the namespace stays: the test holds it
	pidfile := filepath.Join(t.TempDir(), "pid")
	cmd := exec.Command(testutil.StasisBin(t), "restore", "-D", dir, "-d", "--pidfile", pidfile, "--tcp-established",
		"--inherit-fd", "fd[3]:ctnet", "-v4", "-o", filepath.Join(dir, "restore.log"))
	cmd.ExtraFiles = []*os.File{nsf}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("restore into the runtime's namespace: %v\n%s\n%s", err, out, testutil.CriuErrors(nsLogText(filepath.Join(dir, "restore.log"))))
	}
	host := readPidfile(t, pidfile)
	var st2 unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", host), &st2); err != nil || st2.Ino != st.Ino {
		t.Errorf("restored init %d is in network namespace %d (%v), want the runtime's %d", host, st2.Ino, err, st.Ino)
	}
	echo(t, conn, []byte("after the restore"))
	c.checkNet(t, host)
	nft, err := nftables.New(nftables.WithNetNSFd(int(nsf.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	if locks, err := netlock.Tables(nft); err != nil || len(locks) != 0 {
		t.Errorf("network lock tables left in the runtime's namespace: %v (%v)", locks, err)
	}
	checkRestoredNet(t, c, host, want)
}

/*
 * netinit: the init of a container with a network namespace of its own,
 * made with `unshare --net --pid --fork --uts --ipc netinit READY GO`
 * (see README.md). It calls setsid, listens on TCP port 7000 of every
 * address, binds a UDP socket to 127.0.0.1:7001, forks a child (pid 2)
 * holding one end of a unix socketpair with a message queued to it, and
 * waits for the file GO: the test sets the namespace's network up from
 * outside meanwhile, as a runtime does. Then it records what it sees of
 * it (the addresses of its links, /proc/net/route, the sysctls
 * net.ipv4.conf.eth0.forwarding and net.ipv4.conf.all.rp_filter) and
 * says ready; it accepts one connection and echoes every byte of it.
 *
 * On SIGTERM it checks that its network is what it recorded, that its
 * sockets are still bound where they were (the listener listening, the
 * connection's peer the same), ends its child, which checks its unix
 * socket's queued message, and prints PASS.
 */
#include "victim.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>

static char addrs[4096], routes[8192], fwd[64], rpf[64];

static void read_file(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = 0, r;

	buf[0] = 0;
	if (fd < 0)
		return;
	while ((size_t)n < size - 1 && (r = read(fd, buf + n, size - 1 - n)) > 0)
		n += r;
	buf[n] = 0;
	close(fd);
}

/* snapshot lists every address of every link, and the rest of the state. */
static void snapshot(char *a, size_t asz, char *r, size_t rsz, char *f, char *p)
{
	struct ifaddrs *ifa, *i;
	size_t n = 0;

	a[0] = 0;
	if (getifaddrs(&ifa))
		die("getifaddrs: %s", strerror(errno));
	for (i = ifa; i; i = i->ifa_next) {
		char s[INET6_ADDRSTRLEN] = "";

		if (!i->ifa_addr)
			continue;
		if (i->ifa_addr->sa_family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, s, sizeof(s));
		else if (i->ifa_addr->sa_family == AF_INET6 &&
			 !IN6_IS_ADDR_LINKLOCAL(&((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr))
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr, s, sizeof(s));
		if (s[0] && n < asz - 64)
			n += snprintf(a + n, asz - n, "%s=%s ", i->ifa_name, s);
	}
	freeifaddrs(ifa);
	read_file("/proc/net/route", r, rsz);
	read_file("/proc/sys/net/ipv4/conf/eth0/forwarding", f, 64);
	read_file("/proc/sys/net/ipv4/conf/all/rp_filter", p, 64);
}

static const char child_msg[] = "queued for the child";

static void child(int sk)
{
	char buf[64];
	ssize_t n;

	while (!got_term)
		sleep_ms(10);
	n = recv(sk, buf, sizeof(buf), MSG_DONTWAIT);
	if (n != (ssize_t)sizeof(child_msg) || memcmp(buf, child_msg, n))
		fail("child: unix socket message: %zd bytes", n);
	if (getpid() != 2)
		fail("child: pid %d, want 2", getpid());
	exit(victim_failures ? 1 : 0);
}

int main(int argc, char **argv)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(7000) };
	struct sockaddr_in peer, peer2, u = { .sin_family = AF_INET, .sin_port = htons(7001) };
	socklen_t len;
	int one = 1, lsk, usk, conn = -1, sv[2], st;
	pid_t kid;
	char a2[4096], r2[8192], f2[64], p2[64];

	if (argc != 3)
		die("usage: netinit READY GO");
	victim_init();
	if (getpid() != 1)
		die("pid %d, want 1 (run under unshare --pid --fork)", getpid());
	if (setsid() < 0)
		die("setsid: %s", strerror(errno));
	lsk = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(lsk, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lsk, (struct sockaddr *)&sa, sizeof(sa)) || listen(lsk, 4))
		die("listen on port 7000: %s", strerror(errno));
	usk = socket(AF_INET, SOCK_DGRAM, 0);
	u.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(usk, (struct sockaddr *)&u, sizeof(u)))
		die("bind udp 127.0.0.1:7001: %s", strerror(errno));
	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv))
		die("socketpair: %s", strerror(errno));
	kid = fork();
	if (kid == 0) {
		close(sv[0]);
		child(sv[1]);
	}
	close(sv[1]);
	if (send(sv[0], child_msg, sizeof(child_msg), 0) != (ssize_t)sizeof(child_msg))
		die("send to the child: %s", strerror(errno));
	while (access(argv[2], F_OK))
		sleep_ms(10);
	snapshot(addrs, sizeof(addrs), routes, sizeof(routes), fwd, rpf);
	say("network: %s| forwarding %.1s rp_filter %.1s", addrs, fwd, rpf);
	victim_ready(argv[1]);

	len = sizeof(peer);
	while (conn < 0 && !got_term) {
		conn = accept(lsk, (struct sockaddr *)&peer, &len);
		if (conn < 0 && errno != EINTR)
			die("accept: %s", strerror(errno));
	}
	while (!got_term) {
		struct pollfd pfd = { .fd = conn, .events = POLLIN };
		char buf[4096];
		ssize_t n, w, off;

		if (poll(&pfd, 1, 50) <= 0)
			continue;
		n = read(conn, buf, sizeof(buf));
		if (n <= 0) {
			fail("connection: read returned %zd (%s)", n, n ? strerror(errno) : "EOF");
			break;
		}
		for (off = 0; off < n; off += w)
			if ((w = write(conn, buf + off, n - off)) <= 0) {
				fail("connection: write: %s", strerror(errno));
				break;
			}
	}

	snapshot(a2, sizeof(a2), r2, sizeof(r2), f2, p2);
	if (strcmp(addrs, a2))
		fail("addresses: %s, want %s", a2, addrs);
	if (strcmp(routes, r2))
		fail("routes:\n%s\nwant\n%s", r2, routes);
	if (strcmp(fwd, f2) || strcmp(rpf, p2))
		fail("sysctls: forwarding %s rp_filter %s, want %s %s", f2, p2, fwd, rpf);
	len = sizeof(sa);
	if (getsockname(lsk, (struct sockaddr *)&sa, &len) || ntohs(sa.sin_port) != 7000)
		fail("listener: not bound to port 7000");
	if (getsockopt(lsk, SOL_SOCKET, SO_ACCEPTCONN, &one, &(socklen_t){ sizeof(one) }) || !one)
		fail("listener: not listening");
	len = sizeof(u);
	if (getsockname(usk, (struct sockaddr *)&u, &len) || ntohs(u.sin_port) != 7001 ||
	    u.sin_addr.s_addr != htonl(INADDR_LOOPBACK))
		fail("udp socket: not bound to 127.0.0.1:7001");
	len = sizeof(peer2);
	if (conn >= 0 && (getpeername(conn, (struct sockaddr *)&peer2, &len) ||
			  peer2.sin_addr.s_addr != peer.sin_addr.s_addr || peer2.sin_port != peer.sin_port))
		fail("connection: its peer changed");
	kill(kid, SIGTERM);
	if (waitpid(kid, &st, 0) != kid || !WIFEXITED(st) || WEXITSTATUS(st))
		fail("child %d ended with %#x", kid, st);
	if (getpid() != victim_pid)
		fail("pid %d, want %d", getpid(), victim_pid);
	if (victim_failures)
		return 1;
	say("PASS");
	return 0;
}

/*
 * inet: listening TCP sockets and UDP sockets, IPv4 and IPv6, with options.
 *
 *   inet READY P0 P1 P2 P3 P4 P5 P6
 *
 * - L4 TCP 127.0.0.1:P0, backlog 7: TCP_NODELAY, SO_KEEPALIVE, TCP_KEEPIDLE
 *   33, TCP_KEEPINTVL 7, TCP_KEEPCNT 4, SO_RCVBUF 100000, IP_TOS 0x10;
 * - L6 TCP [::]:P1, backlog 9, IPV6_V6ONLY, SO_REUSEPORT, SO_REUSEADDR (on a
 *   specific IPv6 address the kernel sets v6only itself: the wildcard shows it);
 * - LD TCP [::]:P2, backlog 11, dual stack (IPV6_V6ONLY 0);
 * - LF TCP 127.0.0.1:P3, backlog 3, never accepted from (in-flight tests);
 * - U4 UDP 127.0.0.1:P4 and C4 UDP connected to it (ephemeral port);
 * - U6 UDP [::]:P5 (IPV6_V6ONLY) and C6 UDP connected to [::1]:P5;
 * - UD UDP [::]:P6 dual stack;
 * - T a TCP socket never bound.
 * It accepts on L4, L6, LD (replies "y" to one byte, waits for the client
 * to close first, closes) and echoes
 * each datagram on U4, U6, UD to its sender.
 *
 * On SIGTERM it checks every socket's type, addresses (bound and
 * connected), listening state and backlog (TCP_INFO), options and v6only
 * against what they were at start, then sends C4 -> U4, C6 -> U6 and a
 * new IPv4 socket -> UD and checks each datagram arrives from the right
 * address.
 */
#include "victim.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

enum { L4, L6, LD, LF, U4, C4, U6, C6, UD, T, NSK };
static const char *names[NSK] = { "L4", "L6", "LD", "LF", "U4", "C4", "U6", "C6", "UD", "T" };
static int sk[NSK];

struct state {
	struct sockaddr_storage me, peer;
	int type, acceptconn, backlog, v6only, nodelay, keepalive, keepidle, keepintvl, keepcnt, rcvbuf, reuseaddr,
		reuseport, tos;
};
static struct state st0[NSK];

static int addr(struct sockaddr_storage *ss, const char *a, int port)
{
	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, a, &((struct sockaddr_in *)ss)->sin_addr) == 1) {
		ss->ss_family = AF_INET;
		((struct sockaddr_in *)ss)->sin_port = htons(port);
		return sizeof(struct sockaddr_in);
	}
	if (inet_pton(AF_INET6, a, &((struct sockaddr_in6 *)ss)->sin6_addr) != 1)
		die("bad address %s", a);
	ss->ss_family = AF_INET6;
	((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
	return sizeof(struct sockaddr_in6);
}

static int opt(int fd, int level, int o)
{
	int v = -1;
	socklen_t l = sizeof(v);

	if (getsockopt(fd, level, o, &v, &l))
		return -1;
	return v;
}

static void set(int fd, int level, int o, int v, const char *what)
{
	if (setsockopt(fd, level, o, &v, sizeof(v)))
		die("setsockopt %s: %s", what, strerror(errno));
}

static int mk(int family, int type, const char *a, int port, int v6only, int backlog)
{
	int fd = socket(family, type, 0);
	struct sockaddr_storage ss;

	if (fd < 0)
		die("socket: %s", strerror(errno));
	if (family == AF_INET6)
		set(fd, IPPROTO_IPV6, IPV6_V6ONLY, v6only, "IPV6_V6ONLY");
	if (a) {
		int l = addr(&ss, a, port);

		if (bind(fd, (struct sockaddr *)&ss, l))
			die("bind %s:%d: %s", a, port, strerror(errno));
	}
	if (backlog && listen(fd, backlog))
		die("listen: %s", strerror(errno));
	return fd;
}

static void conn(int fd, const char *a, int port)
{
	struct sockaddr_storage ss;
	int l = addr(&ss, a, port);

	if (connect(fd, (struct sockaddr *)&ss, l))
		die("connect %s:%d: %s", a, port, strerror(errno));
}

static void snap(int fd, struct state *s)
{
	uint8_t ti[104];
	socklen_t l = sizeof(ti);

	memset(s, 0, sizeof(*s));
	l = sizeof(s->me);
	getsockname(fd, (struct sockaddr *)&s->me, &l);
	l = sizeof(s->peer);
	getpeername(fd, (struct sockaddr *)&s->peer, &l);
	s->type = opt(fd, SOL_SOCKET, SO_TYPE);
	s->acceptconn = opt(fd, SOL_SOCKET, SO_ACCEPTCONN);
	l = sizeof(ti);
	if (s->type == SOCK_STREAM && !getsockopt(fd, IPPROTO_TCP, TCP_INFO, ti, &l))
		memcpy(&s->backlog, ti + 28, 4); /* tcpi_sacked: the backlog of a listener */
	s->v6only = opt(fd, IPPROTO_IPV6, IPV6_V6ONLY);
	s->nodelay = opt(fd, IPPROTO_TCP, TCP_NODELAY);
	s->keepalive = opt(fd, SOL_SOCKET, SO_KEEPALIVE);
	s->keepidle = opt(fd, IPPROTO_TCP, TCP_KEEPIDLE);
	s->keepintvl = opt(fd, IPPROTO_TCP, TCP_KEEPINTVL);
	s->keepcnt = opt(fd, IPPROTO_TCP, TCP_KEEPCNT);
	s->rcvbuf = opt(fd, SOL_SOCKET, SO_RCVBUF);
	s->reuseaddr = opt(fd, SOL_SOCKET, SO_REUSEADDR);
	s->reuseport = opt(fd, SOL_SOCKET, SO_REUSEPORT);
	s->tos = opt(fd, IPPROTO_IP, IP_TOS);
}

static const char *str(struct sockaddr_storage *ss)
{
	static char bufs[4][80];
	static int n;
	char *b = bufs[n++ % 4], a[64] = "?";
	int port = 0;

	if (ss->ss_family == AF_INET) {
		inet_ntop(AF_INET, &((struct sockaddr_in *)ss)->sin_addr, a, sizeof(a));
		port = ntohs(((struct sockaddr_in *)ss)->sin_port);
	} else if (ss->ss_family == AF_INET6) {
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)ss)->sin6_addr, a, sizeof(a));
		port = ntohs(((struct sockaddr_in6 *)ss)->sin6_port);
	}
	snprintf(b, 80, "%s:%d", a, port);
	return b;
}

static void check(int i)
{
	struct state s, *w = &st0[i];

	snap(sk[i], &s);
#define CMP(f)                                                                          \
	if (s.f != w->f)                                                                \
		fail("%s: " #f " is %d, want %d", names[i], s.f, w->f);
	CMP(type) CMP(acceptconn) CMP(backlog) CMP(v6only) CMP(nodelay) CMP(keepalive) CMP(keepidle)
	CMP(keepintvl) CMP(keepcnt) CMP(rcvbuf) CMP(reuseaddr) CMP(reuseport) CMP(tos)
#undef CMP
	if (memcmp(&s.me, &w->me, sizeof(s.me)))
		fail("%s: bound to %s, want %s", names[i], str(&s.me), str(&w->me));
	if (memcmp(&s.peer, &w->peer, sizeof(s.peer)))
		fail("%s: connected to %s, want %s", names[i], str(&s.peer), str(&w->peer));
}

/* roundtrip sends from fd to the server sk[to] and checks the source. */
static void roundtrip(int fd, int to, const char *what)
{
	char msg[32], got[32] = "";
	struct sockaddr_storage from, want;
	socklen_t fl = sizeof(from), wl = sizeof(want);
	struct pollfd p = { sk[to], POLLIN, 0 };

	snprintf(msg, sizeof(msg), "check %s", what);
	if (send(fd, msg, strlen(msg), 0) < 0) {
		fail("%s: send: %s", what, strerror(errno));
		return;
	}
	if (poll(&p, 1, 2000) != 1) {
		fail("%s: nothing arrived on %s", what, names[to]);
		return;
	}
	ssize_t n = recvfrom(sk[to], got, sizeof(got) - 1, 0, (struct sockaddr *)&from, &fl);

	getsockname(fd, (struct sockaddr *)&want, &wl);
	if (n != (ssize_t)strlen(msg) || memcmp(got, msg, n))
		fail("%s: got %zd bytes %s", what, n, got);
	if (want.ss_family == from.ss_family && memcmp(&from, &want, fl))
		fail("%s: came from %s, want %s", what, str(&from), str(&want));
}

int main(int argc, char **argv)
{
	if (argc < 9)
		die("usage: inet READY P0 P1 P2 P3 P4 P5 P6");
	victim_init();
	int p[7];

	for (int i = 0; i < 7; i++)
		p[i] = atoi(argv[2 + i]);

	sk[L4] = socket(AF_INET, SOCK_STREAM, 0);
	set(sk[L4], IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY");
	set(sk[L4], SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE");
	set(sk[L4], IPPROTO_TCP, TCP_KEEPIDLE, 33, "TCP_KEEPIDLE");
	set(sk[L4], IPPROTO_TCP, TCP_KEEPINTVL, 7, "TCP_KEEPINTVL");
	set(sk[L4], IPPROTO_TCP, TCP_KEEPCNT, 4, "TCP_KEEPCNT");
	set(sk[L4], SOL_SOCKET, SO_RCVBUF, 100000, "SO_RCVBUF");
	set(sk[L4], IPPROTO_IP, IP_TOS, 0x10, "IP_TOS");
	struct sockaddr_storage ss;
	int l = addr(&ss, "127.0.0.1", p[0]);

	if (bind(sk[L4], (struct sockaddr *)&ss, l) || listen(sk[L4], 7))
		die("L4: %s", strerror(errno));
	sk[L6] = socket(AF_INET6, SOCK_STREAM, 0);
	set(sk[L6], SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT");
	set(sk[L6], SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
	set(sk[L6], IPPROTO_IPV6, IPV6_V6ONLY, 1, "IPV6_V6ONLY");
	l = addr(&ss, "::", p[1]);
	if (bind(sk[L6], (struct sockaddr *)&ss, l) || listen(sk[L6], 9))
		die("L6: %s", strerror(errno));
	sk[LD] = mk(AF_INET6, SOCK_STREAM, "::", p[2], 0, 11);
	sk[LF] = mk(AF_INET, SOCK_STREAM, "127.0.0.1", p[3], 0, 3);
	sk[U4] = mk(AF_INET, SOCK_DGRAM, "127.0.0.1", p[4], 0, 0);
	sk[C4] = mk(AF_INET, SOCK_DGRAM, NULL, 0, 0, 0);
	conn(sk[C4], "127.0.0.1", p[4]);
	sk[U6] = mk(AF_INET6, SOCK_DGRAM, "::", p[5], 1, 0);
	sk[C6] = mk(AF_INET6, SOCK_DGRAM, NULL, 0, 1, 0);
	conn(sk[C6], "::1", p[5]);
	sk[UD] = mk(AF_INET6, SOCK_DGRAM, "::", p[6], 0, 0);
	sk[T] = socket(AF_INET, SOCK_STREAM, 0);
	for (int i = 0; i < NSK; i++)
		snap(sk[i], &st0[i]);
	victim_ready(argv[1]);

	int srv[] = { L4, L6, LD, U4, U6, UD };
	struct pollfd pf[6];

	while (!got_term) {
		for (int i = 0; i < 6; i++)
			pf[i] = (struct pollfd){ sk[srv[i]], POLLIN, 0 };
		if (poll(pf, 6, 10) <= 0)
			continue;
		for (int i = 0; i < 6; i++) {
			if (!(pf[i].revents & POLLIN))
				continue;
			if (i < 3) {
				int c = accept(sk[srv[i]], NULL, NULL);
				char b;

				if (c < 0)
					continue;
				if (read(c, &b, 1) == 1 && write(c, "y", 1) != 1)
					fail("%s: reply: %s", names[srv[i]], strerror(errno));
				/*
				 * The client closes first: a TIME_WAIT left on
				 * this side would hold the port of a listener
				 * without SO_REUSEADDR against its restore.
				 */
				if (read(c, &b, 1) < 0)
					fail("%s: wait for EOF: %s", names[srv[i]], strerror(errno));
				close(c);
			} else {
				char b[256];
				struct sockaddr_storage from;
				socklen_t fl = sizeof(from);
				ssize_t n = recvfrom(sk[srv[i]], b, sizeof(b), 0, (struct sockaddr *)&from, &fl);

				if (n > 0 && sendto(sk[srv[i]], b, n, 0, (struct sockaddr *)&from, fl) != n)
					fail("%s: echo: %s", names[srv[i]], strerror(errno));
			}
		}
	}

	for (int i = 0; i < NSK; i++)
		check(i);
	roundtrip(sk[C4], U4, "C4 -> U4");
	roundtrip(sk[C6], U6, "C6 -> U6");
	int v4 = mk(AF_INET, SOCK_DGRAM, NULL, 0, 0, 0);

	conn(v4, "127.0.0.1", p[6]);
	roundtrip(v4, UD, "IPv4 -> UD (dual stack)");
	victim_finish();
}

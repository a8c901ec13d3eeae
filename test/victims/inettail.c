/*
 * inettail: the long tail of inet sockets (issue 15), one scenario a run.
 *
 *   inettail READY SCENARIO
 *
 * udp-shut   R, a UDP socket bound to 127.0.0.1 (port chosen by the
 *            kernel); S connected to R and shut down for writing
 *            (SHUT_WR); T connected to R and shut down both ways. A send
 *            on S or T fails with EPIPE; R still gets what U, connected
 *            to it, sends.
 * ipv6opts   a UDP IPv6 socket bound to [::1] with IPV6_RECVPKTINFO 1,
 *            IPV6_TCLASS 0x28, IPV6_UNICAST_HOPS 7, IPV6_V6ONLY 1,
 *            IPV6_FREEBIND 1: all still set; a datagram it sends to itself
 *            comes with its IPV6_PKTINFO.
 * reuseport  two TCP listeners on one 127.0.0.1 port with SO_REUSEPORT,
 *            and a UDP pair on one port too: all still listening/bound on
 *            that port with SO_REUSEPORT; a client connects.
 * closed     a TCP socket that connected to a listener of the victim,
 *            then was closed by the peer and shut down by itself (state
 *            CLOSE after the exchange) with its local port still bound:
 *            getsockname keeps the port, connect to the listener again
 *            works.
 * tcpclose   a TCP listener (10), a client (11) connected to it and the
 *            end it accepted (12), "hi" sent each way and unread; dumped
 *            with --tcp-close: after the restore both ends read EOF and
 *            get EPIPE on a write; the listener still accepts.
 */
#include "victim.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static int udp4(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int s = socket(AF_INET, SOCK_DGRAM, 0);

	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)))
		die("udp bind: %s", strerror(errno));
	return s;
}

static void connect_to(int s, int to)
{
	struct sockaddr_storage a;
	socklen_t l = sizeof(a);

	if (getsockname(to, (struct sockaddr *)&a, &l) || connect(s, (struct sockaddr *)&a, l))
		die("connect: %s", strerror(errno));
}

static int getint(int s, int level, int opt)
{
	int v = -12345;
	socklen_t l = sizeof(v);

	if (getsockopt(s, level, opt, &v, &l))
		fail("getsockopt %d/%d: %s", level, opt, strerror(errno));
	return v;
}

static void setint(int s, int level, int opt, int v)
{
	if (setsockopt(s, level, opt, &v, sizeof(v)))
		die("setsockopt %d/%d: %s", level, opt, strerror(errno));
}

static int port_of(int s)
{
	struct sockaddr_in a;
	socklen_t l = sizeof(a);

	if (getsockname(s, (struct sockaddr *)&a, &l))
		return -1;
	return ntohs(a.sin_port);
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: inettail READY SCENARIO");
	const char *sc = argv[2];
	int port = 0;

	victim_init();
	signal(SIGPIPE, SIG_IGN);

	if (!strcmp(sc, "udp-shut")) {
		move_to(udp4(), 10);
		move_to(socket(AF_INET, SOCK_DGRAM, 0), 11);
		connect_to(11, 10);
		if (shutdown(11, SHUT_WR))
			die("shutdown: %s", strerror(errno));
		move_to(socket(AF_INET, SOCK_DGRAM, 0), 12);
		connect_to(12, 10);
		if (shutdown(12, SHUT_RDWR))
			die("shutdown: %s", strerror(errno));
		move_to(socket(AF_INET, SOCK_DGRAM, 0), 13);
		connect_to(13, 10);
	} else if (!strcmp(sc, "ipv6opts")) {
		struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };

		move_to(socket(AF_INET6, SOCK_DGRAM, 0), 10);
		setint(10, IPPROTO_IPV6, IPV6_V6ONLY, 1);
		setint(10, IPPROTO_IPV6, IPV6_RECVPKTINFO, 1);
		setint(10, IPPROTO_IPV6, IPV6_TCLASS, 0x28);
		setint(10, IPPROTO_IPV6, IPV6_UNICAST_HOPS, 7);
		setint(10, IPPROTO_IPV6, IPV6_FREEBIND, 1);
		if (bind(10, (struct sockaddr *)&a, sizeof(a)))
			die("bind [::1]: %s", strerror(errno));
	} else if (!strcmp(sc, "reuseport")) {
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

		for (int i = 10; i <= 13; i++) {
			move_to(socket(AF_INET, i < 12 ? SOCK_STREAM : SOCK_DGRAM, 0), i);
			setint(i, SOL_SOCKET, SO_REUSEPORT, 1);
			a.sin_port = htons(port);
			if (bind(i, (struct sockaddr *)&a, sizeof(a)))
				die("bind %d: %s", i, strerror(errno));
			if (i < 12 && listen(i, 4))
				die("listen: %s", strerror(errno));
			if (i == 10 || i == 12)
				port = port_of(i);
		}
	} else if (!strcmp(sc, "closed")) {
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		socklen_t l = sizeof(a);

		move_to(socket(AF_INET, SOCK_STREAM, 0), 10);
		setint(10, SOL_SOCKET, SO_REUSEADDR, 1);
		if (bind(10, (struct sockaddr *)&a, sizeof(a)) || listen(10, 4) || getsockname(10, (struct sockaddr *)&a, &l))
			die("listen: %s", strerror(errno));
		move_to(socket(AF_INET, SOCK_STREAM, 0), 11);
		if (connect(11, (struct sockaddr *)&a, sizeof(a)))
			die("connect: %s", strerror(errno));
		int c = accept(10, NULL, NULL);
		char b[4];

		close(c); /* the peer closes: 11 gets FIN */
		sleep_ms(50);
		if (read(11, b, sizeof(b)) != 0)
			die("no EOF on 11");
		shutdown(11, SHUT_RDWR);
		sleep_ms(50);
		port = port_of(11);
	} else if (!strcmp(sc, "tcpclose")) {
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		socklen_t l = sizeof(a);

		move_to(socket(AF_INET, SOCK_STREAM, 0), 10);
		if (bind(10, (struct sockaddr *)&a, sizeof(a)) || listen(10, 4) || getsockname(10, (struct sockaddr *)&a, &l))
			die("listen: %s", strerror(errno));
		move_to(socket(AF_INET, SOCK_STREAM, 0), 11);
		if (connect(11, (struct sockaddr *)&a, sizeof(a)))
			die("connect: %s", strerror(errno));
		move_to(accept(10, NULL, NULL), 12);
		if (send(11, "hi", 2, 0) != 2 || send(12, "hi", 2, 0) != 2)
			die("send: %s", strerror(errno));
	} else {
		die("unknown scenario %s", sc);
	}

	victim_ready(argv[1]);
	victim_wait();

	if (!strcmp(sc, "udp-shut")) {
		char b[8];

		if (send(11, "x", 1, 0) != -1 || errno != EPIPE)
			fail("send on 11 (SHUT_WR): want EPIPE, got %s", strerror(errno));
		if (send(12, "x", 1, 0) != -1 || errno != EPIPE)
			fail("send on 12 (SHUT_RDWR): want EPIPE, got %s", strerror(errno));
		if (send(13, "u", 1, 0) != 1)
			fail("send on 13: %s", strerror(errno));
		sleep_ms(20);
		if (recv(10, b, sizeof(b), MSG_DONTWAIT) != 1 || b[0] != 'u')
			fail("10 did not get 13's datagram");
	} else if (!strcmp(sc, "ipv6opts")) {
		if (getint(10, IPPROTO_IPV6, IPV6_V6ONLY) != 1)
			fail("IPV6_V6ONLY lost");
		if (getint(10, IPPROTO_IPV6, IPV6_RECVPKTINFO) != 1)
			fail("IPV6_RECVPKTINFO lost");
		if (getint(10, IPPROTO_IPV6, IPV6_TCLASS) != 0x28)
			fail("IPV6_TCLASS is %#x, want 0x28", getint(10, IPPROTO_IPV6, IPV6_TCLASS));
		if (getint(10, IPPROTO_IPV6, IPV6_UNICAST_HOPS) != 7)
			fail("IPV6_UNICAST_HOPS is %d, want 7", getint(10, IPPROTO_IPV6, IPV6_UNICAST_HOPS));
		if (getint(10, IPPROTO_IPV6, IPV6_FREEBIND) != 1)
			fail("IPV6_FREEBIND lost");
		struct sockaddr_in6 a;
		socklen_t l = sizeof(a);
		char b[8], cb[256];
		struct iovec iov = { b, sizeof(b) };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb, .msg_controllen = sizeof(cb) };

		getsockname(10, (struct sockaddr *)&a, &l);
		if (sendto(10, "p", 1, 0, (struct sockaddr *)&a, l) != 1)
			fail("sendto itself: %s", strerror(errno));
		sleep_ms(20);
		if (recvmsg(10, &m, MSG_DONTWAIT) != 1)
			fail("recvmsg: %s", strerror(errno));
		else {
			struct cmsghdr *c = CMSG_FIRSTHDR(&m);
			int got = 0;

			for (; c; c = CMSG_NXTHDR(&m, c))
				got |= c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO;
			if (!got)
				fail("no IPV6_PKTINFO with the datagram");
		}
	} else if (!strcmp(sc, "reuseport")) {
		for (int i = 10; i <= 13; i++) {
			if (!getint(i, SOL_SOCKET, SO_REUSEPORT))
				fail("fd %d: SO_REUSEPORT lost", i);
			if (port_of(i) != port_of(i < 12 ? 10 : 12) || port_of(i) <= 0)
				fail("fd %d: port %d", i, port_of(i));
			if (i < 12 && !getint(i, SOL_SOCKET, SO_ACCEPTCONN))
				fail("fd %d does not listen", i);
		}
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = htons(port_of(10)) };
		int c = socket(AF_INET, SOCK_STREAM, 0);

		if (connect(c, (struct sockaddr *)&a, sizeof(a)))
			fail("connect to the reuseport group: %s", strerror(errno));
		close(c);
	} else if (!strcmp(sc, "closed")) {
		if (port_of(11) != port)
			fail("fd 11: port %d, want %d", port_of(11), port);
		struct sockaddr_in a;
		socklen_t l = sizeof(a);

		getsockname(10, (struct sockaddr *)&a, &l);
		if (connect(11, (struct sockaddr *)&a, sizeof(a)))
			fail("fd 11: connect again: %s", strerror(errno));
	} else if (!strcmp(sc, "tcpclose")) {
		char b[4];

		for (int fd = 11; fd <= 12; fd++) {
			ssize_t n = recv(fd, b, sizeof(b), MSG_DONTWAIT);

			if (n != 0)
				fail("fd %d: recv %zd (%s), want EOF", fd, n, n < 0 ? strerror(errno) : "bytes");
			if (send(fd, "x", 1, 0) != -1 || errno != EPIPE)
				fail("fd %d: send: want EPIPE, got %s", fd, strerror(errno));
		}
		struct sockaddr_in a;
		socklen_t l = sizeof(a);
		int c = socket(AF_INET, SOCK_STREAM, 0);

		getsockname(10, (struct sockaddr *)&a, &l);
		if (connect(c, (struct sockaddr *)&a, l))
			fail("connect to the listener: %s", strerror(errno));
		close(c);
	}
	victim_finish();
}

/*
 * mptcp: MPTCP sockets (IPPROTO_MPTCP, 262), which every Go >= 1.24
 * net/http server listens with.
 *
 *   mptcp READY PORT4 PORT6 [conn]
 *
 * L4 listens with MPTCP on 127.0.0.1:PORT4 (SO_KEEPALIVE, TCP_NODELAY),
 * L6 on [::]:PORT6 (dual stack, SO_REUSEADDR); U is an unbound MPTCP
 * socket, B one bound to 127.0.0.1 but not listening. The main loop
 * answers a client of L4 or L6: it reads one byte, writes 'y', waits for
 * the client's EOF. With "conn", F is an MPTCP socket connected to a plain
 * TCP listener of the victim, so it fell back to TCP (TCP_IS_MPTCP 0), A
 * its accepted end: the kernel has no repair mode for it, the dump must
 * refuse it.
 *
 * On SIGTERM: every socket is still MPTCP (SO_PROTOCOL) with the same
 * local address and options; L4 and L6 accept a connection from inside;
 * B can still listen on its port; F and A exchange bytes both ways.
 */
#include "victim.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#ifndef IPPROTO_MPTCP
#define IPPROTO_MPTCP 262
#endif
#define TCP_IS_MPTCP 43

enum { L4, L6, U, B, F, A, NSK };
static const char *names[NSK] = { "L4", "L6", "U", "B", "F", "A" };
static int sk[NSK] = { -1, -1, -1, -1, -1, -1 };
static struct sockaddr_storage name0[NSK];

static int geti(int fd, int level, int opt)
{
	int v = -1;
	socklen_t l = sizeof(v);

	if (getsockopt(fd, level, opt, &v, &l))
		return -1;
	return v;
}

static void seti(int fd, int level, int opt, int v, const char *what)
{
	if (setsockopt(fd, level, opt, &v, sizeof(v)))
		die("setsockopt %s: %s", what, strerror(errno));
}

static int addr(struct sockaddr_storage *ss, const char *a, int port)
{
	memset(ss, 0, sizeof(*ss));
	if (strchr(a, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		inet_pton(AF_INET6, a, &s6->sin6_addr);
		return sizeof(*s6);
	}
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

	s4->sin_family = AF_INET;
	s4->sin_port = htons(port);
	inet_pton(AF_INET, a, &s4->sin_addr);
	return sizeof(*s4);
}

static void name(int i, struct sockaddr_storage *ss)
{
	socklen_t l = sizeof(*ss);

	memset(ss, 0, sizeof(*ss));
	if (getsockname(sk[i], (struct sockaddr *)ss, &l))
		fail("%s: getsockname: %s", names[i], strerror(errno));
}

/* inside connects a plain TCP client to the listener i and accepts it. */
static void inside(int i, const char *a, int port)
{
	struct sockaddr_storage ss;
	int l = addr(&ss, a, port);
	int c = socket(ss.ss_family, SOCK_STREAM, 0);

	if (connect(c, (struct sockaddr *)&ss, l)) {
		fail("%s: connect to %s port %d: %s", names[i], a, port, strerror(errno));
		close(c);
		return;
	}
	struct pollfd p = { sk[i], POLLIN, 0 };

	if (poll(&p, 1, 2000) != 1) {
		fail("%s: no connection to accept", names[i]);
	} else {
		int s = accept(sk[i], NULL, NULL);

		if (s < 0)
			fail("%s: accept: %s", names[i], strerror(errno));
		close(s);
	}
	close(c);
}

static void exchange(int from, int to)
{
	char b = 0;

	if (write(sk[from], "m", 1) != 1)
		fail("%s -> %s: write: %s", names[from], names[to], strerror(errno));
	struct pollfd p = { sk[to], POLLIN, 0 };

	if (poll(&p, 1, 2000) != 1 || read(sk[to], &b, 1) != 1 || b != 'm')
		fail("%s -> %s: nothing came through", names[from], names[to]);
}

int main(int argc, char **argv)
{
	if (argc < 4)
		die("usage: mptcp READY PORT4 PORT6 [conn]");
	victim_init();
	int p4 = atoi(argv[2]), p6 = atoi(argv[3]);
	int conn = argc > 4 && !strcmp(argv[4], "conn");
	struct sockaddr_storage ss;
	int l;

	sk[L4] = socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP);
	if (sk[L4] < 0)
		die("socket IPPROTO_MPTCP: %s", strerror(errno));
	seti(sk[L4], SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE");
	seti(sk[L4], IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY");
	l = addr(&ss, "127.0.0.1", p4);
	if (bind(sk[L4], (struct sockaddr *)&ss, l) || listen(sk[L4], 7))
		die("L4: %s", strerror(errno));
	sk[L6] = socket(AF_INET6, SOCK_STREAM, IPPROTO_MPTCP);
	seti(sk[L6], SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
	seti(sk[L6], IPPROTO_IPV6, IPV6_V6ONLY, 0, "IPV6_V6ONLY");
	l = addr(&ss, "::", p6);
	if (bind(sk[L6], (struct sockaddr *)&ss, l) || listen(sk[L6], 9))
		die("L6: %s", strerror(errno));
	sk[U] = socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP);
	sk[B] = socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP);
	l = addr(&ss, "127.0.0.1", 0);
	if (bind(sk[B], (struct sockaddr *)&ss, l))
		die("B: %s", strerror(errno));
	if (conn) {
		int t = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
		struct sockaddr_storage ts;
		socklen_t tl = sizeof(ts);

		l = addr(&ss, "127.0.0.1", 0);
		if (bind(t, (struct sockaddr *)&ss, l) || listen(t, 1) || getsockname(t, (struct sockaddr *)&ts, &tl))
			die("T: %s", strerror(errno));
		sk[F] = socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP);
		if (connect(sk[F], (struct sockaddr *)&ts, tl))
			die("F: connect: %s", strerror(errno));
		sk[A] = accept(t, NULL, NULL);
		if (sk[A] < 0)
			die("A: accept: %s", strerror(errno));
		close(t);
		if (geti(sk[F], IPPROTO_TCP, TCP_IS_MPTCP) != 0)
			die("F did not fall back to TCP (TCP_IS_MPTCP %d)", geti(sk[F], IPPROTO_TCP, TCP_IS_MPTCP));
		exchange(F, A);
		exchange(A, F);
	}
	for (int i = 0; i < NSK; i++)
		if (sk[i] >= 0)
			name(i, &name0[i]);
	victim_ready(argv[1]);

	while (!got_term) {
		struct pollfd pf[2] = { { sk[L4], POLLIN, 0 }, { sk[L6], POLLIN, 0 } };

		if (poll(pf, 2, 10) <= 0)
			continue;
		for (int i = 0; i < 2; i++) {
			if (!(pf[i].revents & POLLIN))
				continue;
			int c = accept(pf[i].fd, NULL, NULL);
			char b;

			if (c < 0)
				continue;
			if (read(c, &b, 1) == 1 && write(c, "y", 1) != 1)
				fail("%s: reply: %s", names[i], strerror(errno));
			/* The client closes first: no TIME_WAIT on this side. */
			if (read(c, &b, 1) < 0)
				fail("%s: wait for EOF: %s", names[i], strerror(errno));
			close(c);
		}
	}

	for (int i = 0; i < NSK; i++) {
		struct sockaddr_storage now;

		if (sk[i] < 0)
			continue;
		if (geti(sk[i], SOL_SOCKET, SO_PROTOCOL) != (i == A ? IPPROTO_TCP : IPPROTO_MPTCP))
			fail("%s: SO_PROTOCOL %d", names[i], geti(sk[i], SOL_SOCKET, SO_PROTOCOL));
		name(i, &now);
		if (memcmp(&now, &name0[i], sizeof(now)))
			fail("%s: local address changed", names[i]);
	}
	if (geti(sk[L4], SOL_SOCKET, SO_KEEPALIVE) != 1)
		fail("L4: SO_KEEPALIVE lost");
	if (geti(sk[L4], IPPROTO_TCP, TCP_NODELAY) != 1)
		fail("L4: TCP_NODELAY lost");
	if (geti(sk[L4], SOL_SOCKET, SO_ACCEPTCONN) != 1 || geti(sk[L6], SOL_SOCKET, SO_ACCEPTCONN) != 1)
		fail("a listener no longer listens");
	if (geti(sk[L6], SOL_SOCKET, SO_REUSEADDR) != 1)
		fail("L6: SO_REUSEADDR lost");
	if (geti(sk[L6], IPPROTO_IPV6, IPV6_V6ONLY) != 0)
		fail("L6: became IPv6-only");
	inside(L4, "127.0.0.1", p4);
	inside(L6, "::1", p6);
	inside(L6, "127.0.0.1", p6);
	if (listen(sk[B], 1))
		fail("B: listen: %s", strerror(errno));
	else {
		int port = ntohs(((struct sockaddr_in *)&name0[B])->sin_port);

		inside(B, "127.0.0.1", port);
	}
	if (conn) {
		exchange(F, A);
		exchange(A, F);
	}
	victim_finish();
}

/*
 * icmp: ICMP datagram sockets ("ping sockets": SOCK_DGRAM with
 * IPPROTO_ICMP or IPPROTO_ICMPV6), which unprivileged ping uses. Their
 * creator's group must be in net.ipv4.ping_group_range (the test runs
 * the victim in a network namespace of its own where it is).
 *
 *   icmp READY
 *
 * A (IPv4) is bound by its first echo request to 127.0.0.1 (its port is
 * the echo identifier); C (IPv4) is connected to 127.0.0.1 and bound to
 * identifier 4242; S (IPv6) is bound by its first echo to ::1. Each gets
 * its echo reply before the victim is ready.
 *
 * On SIGTERM: each is still a ping socket with the same identifier (and
 * C's peer), and each gets a reply to a new echo request, carrying its
 * identifier and the request's payload.
 */
#include "victim.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <netinet/icmp6.h>
#include <poll.h>
#include <sys/socket.h>

enum { A, C, S, NSK };
static const char *names[NSK] = { "A", "C", "S" };
static int sk[NSK];
static int ident[NSK];
static uint16_t seq;

static int geti(int fd, int level, int opt)
{
	int v = -1;
	socklen_t l = sizeof(v);

	if (getsockopt(fd, level, opt, &v, &l))
		return -1;
	return v;
}

static int port(int i)
{
	struct sockaddr_storage ss;
	socklen_t l = sizeof(ss);

	if (getsockname(sk[i], (struct sockaddr *)&ss, &l))
		return -1;
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* echo sends an echo request from i and wants its reply; 0 if it came. */
static int echo(int i, const char *what)
{
	unsigned char pkt[64], rep[128];
	struct icmphdr *h = (struct icmphdr *)pkt;
	int v6 = i == S;
	struct sockaddr_storage to;
	socklen_t tl = 0;

	memset(pkt, 0, sizeof(pkt));
	h->type = v6 ? ICMP6_ECHO_REQUEST : ICMP_ECHO;
	h->un.echo.sequence = htons(++seq);
	snprintf((char *)pkt + 8, sizeof(pkt) - 8, "stasis %s %u", names[i], seq);
	memset(&to, 0, sizeof(to));
	if (v6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&to;

		s6->sin6_family = AF_INET6;
		s6->sin6_addr = in6addr_loopback;
		tl = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&to;

		s4->sin_family = AF_INET;
		s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		tl = sizeof(*s4);
	}
	ssize_t n = i == C ? send(sk[i], pkt, sizeof(pkt), 0) : sendto(sk[i], pkt, sizeof(pkt), 0, (struct sockaddr *)&to, tl);

	if (n != (ssize_t)sizeof(pkt)) {
		fail("%s: %s: send echo: %s", names[i], what, strerror(errno));
		return -1;
	}
	for (;;) {
		struct pollfd p = { sk[i], POLLIN, 0 };

		if (poll(&p, 1, 3000) != 1) {
			fail("%s: %s: no echo reply", names[i], what);
			return -1;
		}
		n = recv(sk[i], rep, sizeof(rep), 0);
		if (n < 0) {
			fail("%s: %s: recv: %s", names[i], what, strerror(errno));
			return -1;
		}
		struct icmphdr *r = (struct icmphdr *)rep;

		if (ntohs(r->un.echo.sequence) != seq)
			continue; /* an older one */
		if (r->type != (v6 ? ICMP6_ECHO_REPLY : ICMP_ECHOREPLY) || n != (ssize_t)sizeof(pkt) ||
		    memcmp(rep + 8, pkt + 8, sizeof(pkt) - 8)) {
			fail("%s: %s: bad echo reply (type %d, %zd bytes)", names[i], what, r->type, n);
			return -1;
		}
		if (ident[i] && ntohs(r->un.echo.id) != ident[i])
			fail("%s: %s: reply id %d, want %d", names[i], what, ntohs(r->un.echo.id), ident[i]);
		return 0;
	}
}

int main(int argc, char **argv)
{
	if (argc < 2)
		die("usage: icmp READY");
	victim_init();
	sk[A] = socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP);
	sk[C] = socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP);
	sk[S] = socket(AF_INET6, SOCK_DGRAM, IPPROTO_ICMPV6);
	for (int i = 0; i < NSK; i++)
		if (sk[i] < 0)
			die("socket %s: %s (is the group in net.ipv4.ping_group_range?)", names[i], strerror(errno));
	struct sockaddr_in b = { .sin_family = AF_INET, .sin_port = htons(4242) };

	b.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(sk[C], (struct sockaddr *)&b, sizeof(b)) || connect(sk[C], (struct sockaddr *)&b, sizeof(b)))
		die("C: %s", strerror(errno));
	for (int i = 0; i < NSK; i++) {
		if (echo(i, "setup"))
			die("%s: echo before the dump failed", names[i]);
		ident[i] = port(i);
	}
	if (ident[C] != 4242)
		die("C: identifier %d", ident[C]);
	victim_ready(argv[1]);
	victim_wait();
	for (int i = 0; i < NSK; i++) {
		int proto = geti(sk[i], SOL_SOCKET, SO_PROTOCOL), type = geti(sk[i], SOL_SOCKET, SO_TYPE);

		if (type != SOCK_DGRAM || proto != (i == S ? IPPROTO_ICMPV6 : IPPROTO_ICMP))
			fail("%s: type %d protocol %d", names[i], type, proto);
		if (port(i) != ident[i])
			fail("%s: identifier %d, want %d", names[i], port(i), ident[i]);
		echo(i, "after");
	}
	victim_finish();
}

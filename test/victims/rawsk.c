/*
 * rawsk: packet sockets and raw IP sockets.
 *
 * rawsk READY all PORT:
 * - fd 40: AF_PACKET SOCK_RAW ETH_P_ALL bound to lo, PACKET_VERSION
 *   TPACKET_V2, PACKET_RESERVE 32, PACKET_AUXDATA, PACKET_ORIGDEV,
 *   PACKET_TIMESTAMP 0x40, fanout group (pid & 0xffff, HASH|DEFRAG), and a
 *   classic BPF filter passing only IPv4 UDP to PORT;
 * - fd 41: AF_PACKET SOCK_DGRAM ETH_P_IP, unbound, member of 01:00:5e:7f:01:02
 *   on lo twice and of ALLMULTI on lo;
 * - fd 42: AF_PACKET SOCK_RAW protocol 0, PACKET_VNET_HDR, PACKET_LOSS;
 * - fd 43: raw ICMP bound to 127.0.0.1, ICMP_FILTER passing echo replies only;
 * - fd 44: raw IPPROTO_UDP, IP_HDRINCL, IP_NODEFRAG, connected to 127.0.0.1;
 * - fd 45: raw ICMPv6 bound to ::1, ICMP6_FILTER passing echo replies only.
 *
 * On SIGTERM it checks every address and option, the filter program, the
 * memberships (/proc/net/dev_mcast: the double membership takes two drops;
 * nothing shows the ALLMULTI one), fd 44's peer and state in /proc/self/net/raw
 * (getpeername fails on a raw socket connected without a port), then the traffic: a datagram to PORT+1 and
 * one to PORT sent by a UDP socket and one to PORT built by hand on fd 44
 * (IP_HDRINCL): fd 40 must see both to PORT and nothing else; an echo
 * request to 127.0.0.1 on fd 43 and to ::1 on fd 45: the first packet of
 * its id must be the reply (without the filters, the request comes first).
 *
 * rawsk READY ring: fd 40 as above with a PACKET_RX_RING (not mapped).
 * rawsk READY ebpf: fd 40 as above with an eBPF filter (SO_ATTACH_BPF).
 * The ring is restored; the eBPF filter makes a dump fail. The victim
 * checks the ring (PACKET_VERSION gives EBUSY) or the eBPF filter
 * (SO_GET_FILTER gives EACCES) is still there.
 */
#include "victim.h"
#include <net/if.h> /* before the linux headers, for libc-compat */
#include <arpa/inet.h>
#include <linux/bpf.h>
#include <linux/filter.h>
#include <linux/icmp.h>
#include <linux/icmpv6.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#ifndef IP_NODEFRAG
#define IP_NODEFRAG 22
#endif

static int lo;
static unsigned port;
static int fanout;

#define FILTER_LEN 8
static struct sock_filter prog[FILTER_LEN];

static void mkfilter(void)
{
	struct sock_filter p[FILTER_LEN] = {
		{ 0x28, 0, 0, 12 },		/* ldh [12]: ethertype */
		{ 0x15, 0, 5, ETH_P_IP },	/* jeq IPv4 */
		{ 0x30, 0, 0, 23 },		/* ldb [23]: protocol */
		{ 0x15, 0, 3, IPPROTO_UDP },
		{ 0x28, 0, 0, 36 },		/* ldh [36]: UDP destination port */
		{ 0x15, 0, 1, 0 },		/* jeq PORT */
		{ 0x06, 0, 0, 0xffff },
		{ 0x06, 0, 0, 0 },
	};
	p[5].k = port;
	memcpy(prog, p, sizeof(p));
}

static int getint(int fd, int level, int opt, const char *name)
{
	int v = -12345;
	socklen_t l = sizeof(v);

	if (getsockopt(fd, level, opt, &v, &l))
		fail("fd %d: getsockopt %s: %s", fd, name, strerror(errno));
	return v;
}

static void setint(int fd, int level, int opt, int v, const char *name)
{
	if (setsockopt(fd, level, opt, &v, sizeof(v)))
		die("fd %d: setsockopt %s %d: %s", fd, name, v, strerror(errno));
}

static void checkint(int fd, int level, int opt, const char *name, int want)
{
	int v = getint(fd, level, opt, name);

	if (v != want)
		fail("fd %d: %s is %d, want %d", fd, name, v, want);
}

static void place(int fd, int num)
{
	if (fd < 0)
		die("socket for fd %d: %s", num, strerror(errno));
	if (dup2(fd, num) != num)
		die("dup2 %d: %s", num, strerror(errno));
	close(fd);
}

static void packet40(void)
{
	struct sockaddr_ll sa = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL), .sll_ifindex = lo };
	struct sock_fprog fp = { FILTER_LEN, prog };

	place(socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL)), 40);
	if (bind(40, (struct sockaddr *)&sa, sizeof(sa)))
		die("bind fd 40 to lo: %s", strerror(errno));
	setint(40, SOL_PACKET, PACKET_VERSION, TPACKET_V2, "PACKET_VERSION");
	setint(40, SOL_PACKET, PACKET_RESERVE, 32, "PACKET_RESERVE");
	setint(40, SOL_PACKET, PACKET_AUXDATA, 1, "PACKET_AUXDATA");
	setint(40, SOL_PACKET, PACKET_ORIGDEV, 1, "PACKET_ORIGDEV");
	setint(40, SOL_PACKET, PACKET_TIMESTAMP, 0x40, "PACKET_TIMESTAMP");
	if (setsockopt(40, SOL_SOCKET, SO_ATTACH_FILTER, &fp, sizeof(fp)))
		die("SO_ATTACH_FILTER: %s", strerror(errno));
	fanout = (getpid() & 0xffff) | ((PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG) << 16);
	setint(40, SOL_PACKET, PACKET_FANOUT, fanout, "PACKET_FANOUT");
}

static const unsigned char mcaddr[6] = { 0x01, 0x00, 0x5e, 0x7f, 0x01, 0x02 };

static int membership(int op, int type)
{
	struct packet_mreq m = { .mr_ifindex = lo, .mr_type = type };

	if (type == PACKET_MR_MULTICAST) {
		m.mr_alen = 6;
		memcpy(m.mr_address, mcaddr, 6);
	}
	return setsockopt(41, SOL_PACKET, op, &m, sizeof(m));
}

static void setup_all(void)
{
	packet40();
	place(socket(AF_PACKET, SOCK_DGRAM, htons(ETH_P_IP)), 41);
	if (membership(PACKET_ADD_MEMBERSHIP, PACKET_MR_MULTICAST) ||
	    membership(PACKET_ADD_MEMBERSHIP, PACKET_MR_MULTICAST) ||
	    membership(PACKET_ADD_MEMBERSHIP, PACKET_MR_ALLMULTI))
		die("fd 41: PACKET_ADD_MEMBERSHIP: %s", strerror(errno));

	place(socket(AF_PACKET, SOCK_RAW, 0), 42);
	setint(42, SOL_PACKET, PACKET_VNET_HDR, 1, "PACKET_VNET_HDR");
	setint(42, SOL_PACKET, PACKET_LOSS, 1, "PACKET_LOSS");
	setint(42, SOL_PACKET, PACKET_COPY_THRESH, 100, "PACKET_COPY_THRESH");

	struct sockaddr_in a4 = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct icmp_filter f4 = { ~(1U << ICMP_ECHOREPLY) };

	place(socket(AF_INET, SOCK_RAW, IPPROTO_ICMP), 43);
	if (bind(43, (struct sockaddr *)&a4, sizeof(a4)) ||
	    setsockopt(43, SOL_RAW, ICMP_FILTER, &f4, sizeof(f4)))
		die("fd 43: %s", strerror(errno));

	place(socket(AF_INET, SOCK_RAW, IPPROTO_UDP), 44);
	setint(44, IPPROTO_IP, IP_HDRINCL, 1, "IP_HDRINCL");
	setint(44, IPPROTO_IP, IP_NODEFRAG, 1, "IP_NODEFRAG");
	if (connect(44, (struct sockaddr *)&a4, sizeof(a4)))
		die("connect fd 44: %s", strerror(errno));

	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	struct icmp6_filter f6;

	memset(&f6, 0xff, sizeof(f6));
	f6.data[ICMPV6_ECHO_REPLY >> 5] &= ~(1U << (ICMPV6_ECHO_REPLY & 31));
	place(socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6), 45);
	if (bind(45, (struct sockaddr *)&a6, sizeof(a6)) ||
	    setsockopt(45, SOL_ICMPV6, ICMPV6_FILTER, &f6, sizeof(f6)))
		die("fd 45: %s", strerror(errno));
}

static void check_packet40(void)
{
	struct sockaddr_ll sa;
	socklen_t l = sizeof(sa);
	struct sock_filter got[64];

	memset(&sa, 0, sizeof(sa));
	if (getsockname(40, (struct sockaddr *)&sa, &l))
		fail("fd 40: getsockname: %s", strerror(errno));
	if (sa.sll_family != AF_PACKET || sa.sll_ifindex != lo || sa.sll_protocol != htons(ETH_P_ALL))
		fail("fd 40: bound to family %d interface %d protocol %#x, want lo (%d), ETH_P_ALL",
		     sa.sll_family, sa.sll_ifindex, ntohs(sa.sll_protocol), lo);
	checkint(40, SOL_SOCKET, SO_TYPE, "SO_TYPE", SOCK_RAW);
	checkint(40, SOL_PACKET, PACKET_VERSION, "PACKET_VERSION", TPACKET_V2);
	checkint(40, SOL_PACKET, PACKET_RESERVE, "PACKET_RESERVE", 32);
	checkint(40, SOL_PACKET, PACKET_AUXDATA, "PACKET_AUXDATA", 1);
	checkint(40, SOL_PACKET, PACKET_ORIGDEV, "PACKET_ORIGDEV", 1);
	checkint(40, SOL_PACKET, PACKET_TIMESTAMP, "PACKET_TIMESTAMP", 0x40);
	checkint(40, SOL_PACKET, PACKET_FANOUT, "PACKET_FANOUT", fanout);
	l = sizeof(got) / sizeof(got[0]); /* SO_GET_FILTER counts instructions */
	if (getsockopt(40, SOL_SOCKET, SO_GET_FILTER, got, &l))
		fail("fd 40: SO_GET_FILTER: %s", strerror(errno));
	else if (l != FILTER_LEN || memcmp(got, prog, sizeof(prog)))
		fail("fd 40: filter of %u instructions, not the one attached", l);
}

/* The dev_mcast line of lo holding mcaddr, if any. */
static int lo_has_mcaddr(void)
{
	char line[256], want[16];
	FILE *f = fopen("/proc/net/dev_mcast", "r");
	int found = 0;

	if (!f) {
		fail("open /proc/net/dev_mcast: %s", strerror(errno));
		return 0;
	}
	for (int i = 0; i < 6; i++)
		sprintf(want + 2 * i, "%02x", mcaddr[i]);
	while (fgets(line, sizeof(line), f)) {
		char dev[32], addr[80];
		int idx, users, global;

		if (sscanf(line, "%d %31s %d %d %79s", &idx, dev, &users, &global, addr) == 5 &&
		    !strcmp(dev, "lo") && !strcmp(addr, want))
			found = 1;
	}
	fclose(f);
	return found;
}

static void check_memberships(void)
{
	if (!lo_has_mcaddr())
		fail("fd 41: lo is not in 01:00:5e:7f:01:02 any more (membership lost)");
	if (membership(PACKET_DROP_MEMBERSHIP, PACKET_MR_MULTICAST))
		fail("fd 41: first drop of the multicast membership: %s", strerror(errno));
	if (!lo_has_mcaddr())
		fail("fd 41: one drop left lo without 01:00:5e:7f:01:02: the membership was added once, not twice");
	if (membership(PACKET_DROP_MEMBERSHIP, PACKET_MR_MULTICAST))
		fail("fd 41: second drop of the multicast membership: %s", strerror(errno));
	if (lo_has_mcaddr())
		fail("fd 41: lo still in 01:00:5e:7f:01:02 after both drops");
}

static int icmp6_pass_only_reply(const struct icmp6_filter *f)
{
	for (int t = 0; t < 256; t++) {
		int blocked = !!(f->data[t >> 5] & (1U << (t & 31)));

		if (blocked != (t != ICMPV6_ECHO_REPLY))
			return 0;
	}
	return 1;
}

/* check_raw_peer finds fd in /proc/self/net/raw: connected (01) to 127.0.0.1. */
static void check_raw_peer(int fd)
{
	struct stat st;
	char line[512];
	FILE *f = fopen("/proc/self/net/raw", "r");
	int found = 0;

	if (!f || fstat(fd, &st)) {
		fail("fd %d: /proc/self/net/raw or fstat: %s", fd, strerror(errno));
		return;
	}
	while (fgets(line, sizeof(line), f)) {
		char local[64], remote[64];
		unsigned state;
		unsigned long ino;

		if (sscanf(line, "%*s %63s %63s %x %*s %*s %*s %*s %*s %lu", local, remote, &state, &ino) != 4 ||
		    ino != st.st_ino)
			continue;
		found = 1;
		if (strcmp(remote, "0100007F:0000") || state != 1)
			fail("fd %d: peer %s state %02x in /proc/self/net/raw, want 0100007F:0000 (127.0.0.1) 01 (connected)",
			     fd, remote, state);
	}
	fclose(f);
	if (!found)
		fail("fd %d: not in /proc/self/net/raw", fd);
}

static void check_others(void)
{
	struct sockaddr_ll ll;
	struct sockaddr_in a4;
	struct sockaddr_in6 a6;
	socklen_t l = sizeof(ll);

	checkint(41, SOL_SOCKET, SO_TYPE, "SO_TYPE", SOCK_DGRAM);
	memset(&ll, 0, sizeof(ll));
	if (getsockname(41, (struct sockaddr *)&ll, &l) || ll.sll_protocol != htons(ETH_P_IP) || ll.sll_ifindex != 0)
		fail("fd 41: protocol %#x interface %d, want ETH_P_IP, none", ntohs(ll.sll_protocol), ll.sll_ifindex);
	checkint(42, SOL_PACKET, PACKET_VNET_HDR, "PACKET_VNET_HDR", 1);
	checkint(42, SOL_PACKET, PACKET_LOSS, "PACKET_LOSS", 1);
	l = sizeof(ll);
	memset(&ll, 0, sizeof(ll));
	if (getsockname(42, (struct sockaddr *)&ll, &l) || ll.sll_protocol != 0 || ll.sll_ifindex != 0)
		fail("fd 42: protocol %#x interface %d, want 0, none", ntohs(ll.sll_protocol), ll.sll_ifindex);

	struct icmp_filter f4;

	l = sizeof(a4);
	if (getsockname(43, (struct sockaddr *)&a4, &l) || a4.sin_addr.s_addr != htonl(INADDR_LOOPBACK))
		fail("fd 43: not bound to 127.0.0.1");
	checkint(43, SOL_SOCKET, SO_PROTOCOL, "SO_PROTOCOL", IPPROTO_ICMP);
	l = sizeof(f4);
	if (getsockopt(43, SOL_RAW, ICMP_FILTER, &f4, &l) || f4.data != ~(1U << ICMP_ECHOREPLY))
		fail("fd 43: ICMP_FILTER %#x, want %#x", f4.data, ~(1U << ICMP_ECHOREPLY));

	checkint(44, IPPROTO_IP, IP_HDRINCL, "IP_HDRINCL", 1);
	checkint(44, IPPROTO_IP, IP_NODEFRAG, "IP_NODEFRAG", 1);
	checkint(44, SOL_SOCKET, SO_PROTOCOL, "SO_PROTOCOL", IPPROTO_UDP);
	check_raw_peer(44);

	struct icmp6_filter f6;

	l = sizeof(a6);
	if (getsockname(45, (struct sockaddr *)&a6, &l) || memcmp(&a6.sin6_addr, &in6addr_loopback, 16))
		fail("fd 45: not bound to ::1");
	l = sizeof(f6);
	if (getsockopt(45, SOL_ICMPV6, ICMPV6_FILTER, &f6, &l) || !icmp6_pass_only_reply(&f6))
		fail("fd 45: ICMPV6_FILTER lost");
}

static void send_hdrincl(void)
{
	unsigned char pkt[20 + 8 + 16];
	const char *msg = "rawsk-hdrincl..";
	struct iphdr *ip = (void *)pkt;

	memset(pkt, 0, sizeof(pkt));
	ip->version = 4;
	ip->ihl = 5;
	ip->tot_len = htons(sizeof(pkt));
	ip->ttl = 64;
	ip->protocol = IPPROTO_UDP;
	ip->saddr = ip->daddr = htonl(INADDR_LOOPBACK);
	pkt[20] = 0x30; /* source port 12345 */
	pkt[21] = 0x39;
	pkt[22] = port >> 8;
	pkt[23] = port & 0xff;
	pkt[24] = 0;
	pkt[25] = 8 + 16;
	memcpy(pkt + 28, msg, 16);
	/* A port unreachable for an earlier datagram may be pending on this
	 * connected socket: send reports it once. */
	for (int i = 0; i < 3; i++) {
		if (send(44, pkt, sizeof(pkt), 0) == (ssize_t)sizeof(pkt))
			return;
		if (errno != ECONNREFUSED)
			break;
	}
	fail("fd 44: send: %s", strerror(errno));
}

static void drain(int fd)
{
	char b[4096];

	while (recv(fd, b, sizeof(b), MSG_DONTWAIT) > 0)
		;
}

static void check_packet_traffic(void)
{
	int u = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int seen_udp = 0, seen_hdrincl = 0;

	drain(40);
	send_hdrincl();
	to.sin_port = htons(port + 1);
	sendto(u, "rawsk-other", 11, 0, (struct sockaddr *)&to, sizeof(to));
	to.sin_port = htons(port);
	if (sendto(u, "rawsk-port", 10, 0, (struct sockaddr *)&to, sizeof(to)) != 10)
		fail("send to 127.0.0.1:%u: %s", port, strerror(errno));
	close(u);
	for (int i = 0; i < 40 && !(seen_udp && seen_hdrincl); i++) {
		struct pollfd p = { 40, POLLIN, 0 };
		unsigned char b[2048];

		if (poll(&p, 1, 50) != 1)
			continue;
		ssize_t n = recv(40, b, sizeof(b), 0);

		if (n < 42 || b[12] != 0x08 || b[13] != 0 || b[23] != IPPROTO_UDP || (b[36] << 8 | b[37]) != port) {
			fail("fd 40: a frame of %zd bytes the filter should have dropped (ethertype %02x%02x)", n, b[12], b[13]);
			continue;
		}
		if (n >= 52 && !memcmp(b + 42, "rawsk-port", 10))
			seen_udp = 1;
		if (n >= 57 && !memcmp(b + 42, "rawsk-hdrincl", 13))
			seen_hdrincl = 1;
	}
	if (!seen_udp)
		fail("fd 40: never saw the datagram to 127.0.0.1:%u on lo", port);
	if (!seen_hdrincl)
		fail("fd 40: never saw the datagram built by hand on fd 44 (IP_HDRINCL)");
}

static uint16_t csum(const void *p, int n)
{
	const uint16_t *w = p;
	uint32_t s = 0;

	for (; n > 1; n -= 2)
		s += *w++;
	if (n)
		s += *(const uint8_t *)w;
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return ~s;
}

/* ping sends an echo request on fd and returns the type of the first
 * packet of its id that comes back. */
static int ping(int fd, int v6)
{
	unsigned char req[16], b[2048];
	uint16_t id = getpid() & 0xffff;

	memset(req, 0, sizeof(req));
	req[0] = v6 ? ICMPV6_ECHO_REQUEST : ICMP_ECHO;
	memcpy(req + 4, &id, 2);
	req[7] = 7;
	memcpy(req + 8, "rawsk!!", 8);
	if (!v6) {
		uint16_t c = csum(req, sizeof(req));

		memcpy(req + 2, &c, 2);
	}
	drain(fd);
	struct sockaddr_in a4 = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	ssize_t n = v6 ? sendto(fd, req, sizeof(req), 0, (struct sockaddr *)&a6, sizeof(a6))
		       : sendto(fd, req, sizeof(req), 0, (struct sockaddr *)&a4, sizeof(a4));

	if (n != (ssize_t)sizeof(req)) {
		fail("fd %d: send echo request: %s", fd, strerror(errno));
		return -1;
	}
	for (int i = 0; i < 40; i++) {
		struct pollfd p = { fd, POLLIN, 0 };

		if (poll(&p, 1, 50) != 1)
			continue;
		n = recv(fd, b, sizeof(b), 0);
		int off = v6 ? 0 : (b[0] & 0xf) * 4; /* IPv4 raw sockets get the IP header */

		if (n < off + 8)
			continue;
		if (!memcmp(b + off + 4, &id, 2))
			return b[off];
	}
	fail("fd %d: no answer to the echo request", fd);
	return -1;
}

static void check_all(void)
{
	check_packet40();
	check_others();
	check_memberships();
	check_packet_traffic();
	int t = ping(43, 0);

	if (t >= 0 && t != ICMP_ECHOREPLY)
		fail("fd 43: first packet of the ping is of type %d, not an echo reply: ICMP_FILTER lost", t);
	t = ping(45, 1);
	if (t >= 0 && t != ICMPV6_ECHO_REPLY)
		fail("fd 45: first packet of the ping is of type %d, not an echo reply: ICMPV6_FILTER lost", t);
}

static void setup_ebpf(void)
{
	struct bpf_insn insns[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 0 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	union bpf_attr a;

	memset(&a, 0, sizeof(a));
	a.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
	a.insns = (uintptr_t)insns;
	a.insn_cnt = 2;
	a.license = (uintptr_t)"GPL";
	int p = syscall(SYS_bpf, BPF_PROG_LOAD, &a, sizeof(a));

	if (p < 0)
		die("BPF_PROG_LOAD: %s", strerror(errno));
	place(socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL)), 40);
	if (setsockopt(40, SOL_SOCKET, SO_ATTACH_BPF, &p, sizeof(p)))
		die("SO_ATTACH_BPF: %s", strerror(errno));
	close(p);
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: rawsk READY all PORT | ring | ebpf");
	victim_init();
	lo = if_nametoindex("lo");
	if (!lo)
		die("no lo: %s", strerror(errno));
	const char *mode = argv[2];

	if (!strcmp(mode, "all")) {
		if (argc < 4 || !(port = atoi(argv[3])) || port > 65534)
			die("all needs a port below 65535");
		mkfilter();
		setup_all();
	} else if (!strcmp(mode, "ring")) {
		struct tpacket_req r = { .tp_block_size = 4096, .tp_block_nr = 1, .tp_frame_size = 2048, .tp_frame_nr = 2 };

		port = 9;
		mkfilter();
		packet40();
		if (setsockopt(40, SOL_PACKET, PACKET_RX_RING, &r, sizeof(r)))
			die("PACKET_RX_RING: %s", strerror(errno));
	} else if (!strcmp(mode, "ebpf")) {
		setup_ebpf();
	} else {
		die("unknown mode %s", mode);
	}
	victim_ready(argv[1]);
	victim_wait();

	if (!strcmp(mode, "all")) {
		check_all();
	} else if (!strcmp(mode, "ring")) {
		int v = TPACKET_V1;

		if (!setsockopt(40, SOL_PACKET, PACKET_VERSION, &v, sizeof(v)) || errno != EBUSY)
			fail("fd 40: PACKET_VERSION did not fail with EBUSY: the ring is gone");
		check_packet40();
	} else {
		socklen_t l = 0;

		if (getsockopt(40, SOL_SOCKET, SO_GET_FILTER, NULL, &l) == 0 || errno != EACCES)
			fail("fd 40: SO_GET_FILTER did not fail with EACCES: the eBPF filter is gone");
	}
	victim_finish();
}

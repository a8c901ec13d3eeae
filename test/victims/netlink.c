/*
 * netlink: NETLINK_ROUTE sockets.
 *
 * - fd 40: bound (port id from the kernel) with nl_groups RTMGRP_LINK |
 *   RTMGRP_IPV4_IFADDR, joined to RTNLGRP_IPV6_ROUTE (11) and RTNLGRP_NSID
 *   (28) with NETLINK_ADD_MEMBERSHIP, SO_RCVBUF 65536, O_NONBLOCK;
 * - fd 41: never bound (port id 0), SOCK_DGRAM.
 *
 * On SIGTERM it checks fd 40's port id, memberships (NETLINK_LIST_MEMBERSHIPS),
 * SO_RCVBUF and flags, fd 41's port id (still 0), then sends an RTM_GETLINK
 * dump request on each and must read the reply (the loopback link) to its
 * sequence number.
 */
#include "victim.h"
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <sys/socket.h>

static uint32_t portid(int fd)
{
	struct sockaddr_nl sa;
	socklen_t l = sizeof(sa);

	memset(&sa, 0, sizeof(sa));
	if (getsockname(fd, (struct sockaddr *)&sa, &l))
		fail("getsockname fd %d: %s", fd, strerror(errno));
	return sa.nl_pid;
}

static int groups(int fd, uint32_t *g, int n)
{
	socklen_t l = n * 4;

	memset(g, 0, n * 4);
	if (getsockopt(fd, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, g, &l))
		fail("NETLINK_LIST_MEMBERSHIPS: %s", strerror(errno));
	return l;
}

static void getlink(int fd, uint32_t seq)
{
	struct {
		struct nlmsghdr h;
		struct ifinfomsg i;
	} req;
	char buf[32768];
	int done = 0, links = 0;

	memset(&req, 0, sizeof(req));
	req.h.nlmsg_len = sizeof(req);
	req.h.nlmsg_type = RTM_GETLINK;
	req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	req.h.nlmsg_seq = seq;
	struct sockaddr_nl k = { .nl_family = AF_NETLINK };

	if (sendto(fd, &req, sizeof(req), 0, (struct sockaddr *)&k, sizeof(k)) < 0) {
		fail("fd %d: send RTM_GETLINK: %s", fd, strerror(errno));
		return;
	}
	while (!done) {
		struct pollfd p = { fd, POLLIN, 0 };

		if (poll(&p, 1, 2000) != 1) {
			fail("fd %d: no RTM_GETLINK reply", fd);
			return;
		}
		ssize_t n = recv(fd, buf, sizeof(buf), 0);

		if (n < 0) {
			fail("fd %d: recv: %s", fd, strerror(errno));
			return;
		}
		for (struct nlmsghdr *h = (void *)buf; NLMSG_OK(h, n); h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_seq != seq)
				continue; /* a notification of the groups */
			if (h->nlmsg_type == NLMSG_DONE)
				done = 1;
			else if (h->nlmsg_type == RTM_NEWLINK)
				links++;
			else if (h->nlmsg_type == NLMSG_ERROR) {
				fail("fd %d: RTM_GETLINK error", fd);
				return;
			}
		}
	}
	if (!links)
		fail("fd %d: RTM_GETLINK listed no link", fd);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		die("usage: netlink READY");
	victim_init();
	int a = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK, NETLINK_ROUTE);
	int b = socket(AF_NETLINK, SOCK_DGRAM, NETLINK_ROUTE);
	int rcv = 65536, g11 = RTNLGRP_IPV6_ROUTE, g28 = RTNLGRP_NSID;
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK, .nl_groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR };

	if (a < 0 || b < 0 || dup2(a, 40) != 40 || dup2(b, 41) != 41)
		die("socket: %s", strerror(errno));
	close(a);
	close(b);
	if (setsockopt(40, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv)) ||
	    bind(40, (struct sockaddr *)&sa, sizeof(sa)) ||
	    setsockopt(40, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &g11, sizeof(g11)) ||
	    setsockopt(40, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &g28, sizeof(g28)))
		die("setup fd 40: %s", strerror(errno));
	uint32_t port0 = portid(40), g0[4], g[4];
	int gl0 = groups(40, g0, 4);
	socklen_t l = sizeof(rcv);
	int rcv0 = 0;

	getsockopt(40, SOL_SOCKET, SO_RCVBUF, &rcv0, &l);
	if (port0 == 0)
		die("fd 40 has no port id");
	victim_ready(argv[1]);
	victim_wait();

	if (portid(40) != port0)
		fail("fd 40: port id %u, want %u", portid(40), port0);
	int gl = groups(40, g, 4);

	if (gl != gl0 || memcmp(g, g0, sizeof(g)))
		fail("fd 40: groups %#x %#x (%d bytes), want %#x %#x (%d bytes)", g[0], g[1], gl, g0[0], g0[1], gl0);
	rcv = 0;
	getsockopt(40, SOL_SOCKET, SO_RCVBUF, &rcv, &l);
	if (rcv != rcv0)
		fail("fd 40: SO_RCVBUF %d, want %d", rcv, rcv0);
	if (!(fcntl(40, F_GETFL) & O_NONBLOCK))
		fail("fd 40: O_NONBLOCK lost");
	if (portid(41) != 0)
		fail("fd 41: port id %u, want 0 (never bound)", portid(41));
	getlink(40, 4242);
	getlink(41, 4343);
	victim_finish();
}

/*
 * pkttail: packet sockets with memory-mapped rings, and SOCK_PACKET
 * sockets (issue 15), one scenario a run. Everything goes over lo, with
 * the local experimental ethertype 0x88b5; each frame carries the
 * victim's pid, so frames of other runs on lo are told apart.
 *
 *   pkttail READY SCENARIO
 *
 * rx-v2    fd 10: SOCK_RAW bound to lo, TPACKET_V2, an rx ring of 32
 *          frames mmap'ed; a frame received and consumed before the
 *          dump. After the restore: the ring is mapped at the same
 *          address and size, the version and the ring are kept
 *          (PACKET_RX_RING again: EBUSY), and a frame sent after the
 *          restore shows in the ring, read at the old address.
 * rx-fork  rx-v2 whose socket and ring a forked child shares: after the
 *          restore the child finds the ring at the same address and a
 *          frame it sends in it, then the parent does the checks of
 *          rx-v2.
 * txrx-v2  fd 10: TPACKET_V2 with an rx and a tx ring in one mapping
 *          (rx first). After the restore a frame written into the tx
 *          ring at the old address and sent with send() comes back on
 *          lo into the rx ring.
 * rx-v3    fd 10: TPACKET_V3 rx ring of 4 blocks (retire timeout 10 ms,
 *          16 bytes of private area per block). After the restore: version, mapping, a
 *          frame sent then shows in a block at the old address.
 * ring-closed  a v2 rx ring mapped, its socket's fd closed: criu refuses
 *          it (the ring cannot be set up without its socket), and so
 *          does stasis; the mapping must still be there afterwards.
 * spkt     fd 10: SOCK_PACKET (the obsolete interface), protocol
 *          0x88b5, bound to "lo". After the restore: SO_TYPE is
 *          SOCK_PACKET, getsockname names lo, and a frame sent with
 *          sendto(sockaddr_pkt) comes back on it.
 *
 * Ring contents are not kept across a restore (criu 4.2 maps a new,
 * empty ring, and the kernel's position in it starts again at the
 * first frame): the checks scan every frame.
 */
#include "victim.h"

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>

#define PROTO 0x88b5
#define FRAME_SIZE 2048
#define BLOCK_SIZE 16384
#define BLOCK_NR 4
#define FRAME_NR (BLOCK_SIZE / FRAME_SIZE * BLOCK_NR)
#define RING_SIZE (BLOCK_SIZE * BLOCK_NR)

static int lo;
static uint8_t *ring;
static size_t ring_len;
static uint32_t seq;
static pid_t child;

/* frame builds an ethernet frame to and from lo's (zero) address. */
static int frame(uint8_t *b, uint32_t n)
{
	struct ethhdr *h = (struct ethhdr *)b;
	uint32_t pid = htonl(getpid());

	memset(b, 0, 64);
	h->h_proto = htons(PROTO);
	memcpy(b + sizeof(*h), &pid, 4);
	n = htonl(n);
	memcpy(b + sizeof(*h) + 4, &n, 4);
	return 60;
}

/* ours tells whether data (a frame from its ethernet header) is frame n. */
static int ours(const uint8_t *d, uint32_t n)
{
	uint8_t want[64];

	frame(want, n);
	return !memcmp(d + 12, want + 12, 10);
}

static void send_raw(uint32_t n)
{
	int s = socket(AF_PACKET, SOCK_RAW, htons(PROTO));
	struct sockaddr_ll a = { .sll_family = AF_PACKET, .sll_ifindex = lo, .sll_protocol = htons(PROTO) };
	uint8_t b[64];

	if (s < 0 || sendto(s, b, frame(b, n), 0, (struct sockaddr *)&a, sizeof(a)) < 0)
		fail("send frame %u on lo: %s", n, strerror(errno));
	if (s >= 0)
		close(s);
}

static void wait_in(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	poll(&p, 1, 2000);
}

/* find_v2 looks for frame n among the frames of a v2 rx ring; consume
 * gives the frame back to the kernel. */
static int find_v2(uint8_t *r, uint32_t n, int consume)
{
	for (int try = 0; try < 200; try++) {
		for (int i = 0; i < FRAME_NR; i++) {
			struct tpacket2_hdr *h = (struct tpacket2_hdr *)(r + i * FRAME_SIZE);

			if (!(__atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER))
				continue;
			int hit = ours((uint8_t *)h + h->tp_mac, n);

			if (consume || !hit)
				__atomic_store_n(&h->tp_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
			if (hit)
				return 0;
		}
		wait_in(10);
		sleep_ms(10);
	}
	return -1;
}

static int find_v3(uint32_t n)
{
	for (int try = 0; try < 200; try++) {
		for (int b = 0; b < BLOCK_NR; b++) {
			struct tpacket_block_desc *bd = (struct tpacket_block_desc *)(ring + b * BLOCK_SIZE);

			if (!(__atomic_load_n(&bd->hdr.bh1.block_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER))
				continue;
			struct tpacket3_hdr *h = (struct tpacket3_hdr *)((uint8_t *)bd + bd->hdr.bh1.offset_to_first_pkt);
			int hit = 0;

			for (uint32_t k = 0; k < bd->hdr.bh1.num_pkts; k++) {
				hit |= ours((uint8_t *)h + h->tp_mac, n);
				h = (struct tpacket3_hdr *)((uint8_t *)h + h->tp_next_offset);
			}
			__atomic_store_n(&bd->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
			if (hit)
				return 0;
		}
		wait_in(10);
		sleep_ms(10);
	}
	return -1;
}

static void setopt(int level, int opt, const void *v, socklen_t l, const char *name)
{
	if (setsockopt(10, level, opt, v, l))
		die("setsockopt %s: %s", name, strerror(errno));
}

static void ring_socket(int version, int tx)
{
	struct sockaddr_ll a = { .sll_family = AF_PACKET, .sll_ifindex = lo, .sll_protocol = htons(PROTO) };

	move_to(socket(AF_PACKET, SOCK_RAW, htons(PROTO)), 10);
	setopt(SOL_PACKET, PACKET_VERSION, &version, sizeof(version), "PACKET_VERSION");
	if (version == TPACKET_V3) {
		struct tpacket_req3 r = { .tp_block_size = BLOCK_SIZE, .tp_block_nr = BLOCK_NR,
					  .tp_frame_size = FRAME_SIZE, .tp_frame_nr = FRAME_NR,
					  .tp_retire_blk_tov = 10, .tp_sizeof_priv = 16 };

		setopt(SOL_PACKET, PACKET_RX_RING, &r, sizeof(r), "PACKET_RX_RING");
	} else {
		struct tpacket_req r = { .tp_block_size = BLOCK_SIZE, .tp_block_nr = BLOCK_NR,
					 .tp_frame_size = FRAME_SIZE, .tp_frame_nr = FRAME_NR };

		setopt(SOL_PACKET, PACKET_RX_RING, &r, sizeof(r), "PACKET_RX_RING");
		if (tx)
			setopt(SOL_PACKET, PACKET_TX_RING, &r, sizeof(r), "PACKET_TX_RING");
	}
	ring_len = RING_SIZE * (tx ? 2 : 1);
	ring = mmap(NULL, ring_len, PROT_READ | PROT_WRITE, MAP_SHARED, 10, 0);
	if (ring == MAP_FAILED)
		die("mmap ring: %s", strerror(errno));
	if (bind(10, (struct sockaddr *)&a, sizeof(a)))
		die("bind to lo: %s", strerror(errno));
}

/* check_ring checks what every ring scenario keeps. */
static void check_ring(int version)
{
	int v = -1;
	socklen_t l = sizeof(v);
	char line[256];
	FILE *f = fopen("/proc/self/maps", "r");
	int mapped = 0;

	if (getsockopt(10, SOL_PACKET, PACKET_VERSION, &v, &l) || v != version)
		fail("PACKET_VERSION is %d (%s), want %d", v, strerror(errno), version);
	while (f && fgets(line, sizeof(line), f)) {
		unsigned long s, e;

		if (sscanf(line, "%lx-%lx", &s, &e) == 2 && s == (unsigned long)ring) {
			mapped = 1;
			if (e - s != ring_len)
				fail("the ring at %p is %lu bytes, want %zu: %s", ring, e - s, ring_len, line);
			if (!strstr(line, "socket:["))
				fail("the mapping at %p is not the socket's: %s", ring, line);
		}
	}
	if (f)
		fclose(f);
	if (!mapped)
		fail("no mapping at the ring's address %p", ring);
	if (version != TPACKET_V3) {
		struct tpacket_req r = { .tp_block_size = BLOCK_SIZE, .tp_block_nr = BLOCK_NR,
					 .tp_frame_size = FRAME_SIZE, .tp_frame_nr = FRAME_NR };

		if (setsockopt(10, SOL_PACKET, PACKET_RX_RING, &r, sizeof(r)) == 0 || errno != EBUSY)
			fail("PACKET_RX_RING again: %s, want EBUSY (the ring is gone)", strerror(errno));
	}
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: pkttail READY SCENARIO");
	const char *sc = argv[2];

	victim_init();
	lo = if_nametoindex("lo");
	if (!lo)
		die("no lo: %s", strerror(errno));
	if (!strcmp(sc, "rx-v2") || !strcmp(sc, "rx-fork")) {
		ring_socket(TPACKET_V2, 0);
		send_raw(++seq);
		if (find_v2(ring, seq, 1))
			die("frame %u not in the rx ring before the dump", seq);
		if (!strcmp(sc, "rx-fork")) {
			child = fork();
			if (child < 0)
				die("fork: %s", strerror(errno));
			if (child == 0) {
				victim_wait();
				check_ring(TPACKET_V2);
				send_raw(1000);
				if (find_v2(ring, 1000, 1))
					fail("child: frame 1000 sent after the restore is not in the rx ring at %p", ring);
				_exit(victim_failures ? 1 : 0);
			}
		}
	} else if (!strcmp(sc, "txrx-v2")) {
		ring_socket(TPACKET_V2, 1);
	} else if (!strcmp(sc, "rx-v3")) {
		ring_socket(TPACKET_V3, 0);
		send_raw(++seq);
		if (find_v3(seq))
			die("frame %u not in the v3 ring before the dump", seq);
	} else if (!strcmp(sc, "ring-closed")) {
		ring_socket(TPACKET_V2, 0);
		close(10);
	} else if (!strcmp(sc, "spkt")) {
		struct sockaddr sa = { .sa_family = AF_PACKET };

		move_to(socket(AF_PACKET, SOCK_PACKET, htons(PROTO)), 10);
		strcpy(sa.sa_data, "lo");
		if (bind(10, &sa, sizeof(sa)))
			die("bind SOCK_PACKET to lo: %s", strerror(errno));
	} else {
		die("unknown scenario %s", sc);
	}
	victim_ready(argv[1]);
	victim_wait();

	if (child > 0) {
		int st;

		kill(child, SIGTERM);
		if (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st))
			fail("the child sharing the ring failed (status %#x)", st);
	}
	if (!strcmp(sc, "rx-v2") || !strcmp(sc, "rx-fork")) {
		check_ring(TPACKET_V2);
		send_raw(++seq);
		if (find_v2(ring, seq, 1))
			fail("frame %u sent after the restore is not in the rx ring at %p", seq, ring);
	} else if (!strcmp(sc, "txrx-v2")) {
		struct tpacket2_hdr *h = (struct tpacket2_hdr *)(ring + RING_SIZE);
		uint8_t *d = (uint8_t *)h + TPACKET2_HDRLEN - sizeof(struct sockaddr_ll);

		check_ring(TPACKET_V2);
		h->tp_len = frame(d, ++seq);
		__atomic_store_n(&h->tp_status, TP_STATUS_SEND_REQUEST, __ATOMIC_RELEASE);
		if (send(10, NULL, 0, 0) < 0)
			fail("send through the tx ring: %s", strerror(errno));
		else if (find_v2(ring, seq, 1))
			fail("frame %u sent through the tx ring at %p did not come back into the rx ring", seq, ring + RING_SIZE);
	} else if (!strcmp(sc, "ring-closed")) {
		volatile struct tpacket2_hdr *h = (struct tpacket2_hdr *)ring;

		if (h->tp_status & ~(TP_STATUS_USER | TP_STATUS_COPY | TP_STATUS_LOSING | TP_STATUS_CSUMNOTREADY))
			fail("the ring's first frame has status %#x", h->tp_status);
	} else if (!strcmp(sc, "rx-v3")) {
		check_ring(TPACKET_V3);
		send_raw(++seq);
		if (find_v3(seq))
			fail("frame %u sent after the restore is not in the v3 ring at %p", seq, ring);
	} else if (!strcmp(sc, "spkt")) {
		int t = -1;
		socklen_t l = sizeof(t);
		struct sockaddr sa;
		uint8_t b[128];

		if (getsockopt(10, SOL_SOCKET, SO_TYPE, &t, &l) || t != SOCK_PACKET)
			fail("SO_TYPE is %d (%s), want SOCK_PACKET", t, strerror(errno));
		l = sizeof(sa);
		memset(&sa, 0, sizeof(sa));
		if (getsockname(10, &sa, &l) || strcmp(sa.sa_data, "lo"))
			fail("getsockname: %.14s (%s), want lo", sa.sa_data, strerror(errno));
		memset(&sa, 0, sizeof(sa));
		sa.sa_family = AF_PACKET;
		strcpy(sa.sa_data, "lo");
		if (sendto(10, b, frame(b, ++seq), 0, &sa, sizeof(sa)) < 0)
			fail("sendto lo: %s", strerror(errno));
		for (int i = 0;; i++) {
			ssize_t n;

			wait_in(10);
			n = recv(10, b, sizeof(b), MSG_DONTWAIT);
			if (n >= 22 && ours(b, seq))
				break;
			if (n < 0 && i > 200) {
				fail("frame %u sent after the restore did not come back: %s", seq, strerror(errno));
				break;
			}
			if (n < 0)
				sleep_ms(10);
		}
	}
	victim_finish();
}

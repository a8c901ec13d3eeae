/*
 * clock: the pid and the clocks (vDSO path) are right after a restore.
 *
 *   clock READY
 *
 * Remembers getpid() at start (checked at the end, also with a raw syscall:
 * no cached value). Every 5 ms it reads CLOCK_MONOTONIC through the vDSO and
 * records it if time ever went backwards (across the restore included).
 * On SIGTERM it checks that the vDSO is still mapped where AT_SYSINFO_EHDR
 * says, that vDSO and raw-syscall readings of MONOTONIC, BOOTTIME and
 * REALTIME (and gettimeofday) agree, and that all of them move forward over
 * a 50 ms sleep (a stale or missing vvar page freezes or breaks them).
 */
#include "victim.h"
#include <sys/auxv.h>
#include <sys/syscall.h>
#include <sys/time.h>

static int64_t ns(struct timespec ts) { return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec; }

static int64_t vdso_now(clockid_t id)
{
	struct timespec ts;

	if (clock_gettime(id, &ts))
		fail("clock_gettime(%d): %s", id, strerror(errno));
	return ns(ts);
}

static int64_t sys_now(clockid_t id)
{
	struct timespec ts;

	if (syscall(SYS_clock_gettime, id, &ts))
		fail("syscall clock_gettime(%d): %s", id, strerror(errno));
	return ns(ts);
}

static int64_t tod_now(void)
{
	struct timeval tv;

	if (gettimeofday(&tv, NULL))
		fail("gettimeofday: %s", strerror(errno));
	return (int64_t)tv.tv_sec * 1000000000 + tv.tv_usec * 1000;
}

static void check_vdso_mapped(void)
{
	unsigned long ehdr = getauxval(AT_SYSINFO_EHDR);
	char line[512];
	int found = 0;

	if (!ehdr) {
		fail("AT_SYSINFO_EHDR is 0: no vDSO");
		return;
	}
	FILE *f = fopen("/proc/self/maps", "r");
	if (!f) {
		fail("open /proc/self/maps: %s", strerror(errno));
		return;
	}
	while (fgets(line, sizeof(line), f)) {
		if (strstr(line, "[vdso]") && strtoul(line, NULL, 16) == ehdr)
			found = 1;
	}
	fclose(f);
	if (!found)
		fail("[vdso] is not mapped at AT_SYSINFO_EHDR %#lx", ehdr);
}

static void check_clock(clockid_t id, const char *name)
{
	const int64_t slack = 100 * 1000000LL;
	int64_t a = vdso_now(id), b = sys_now(id), c = vdso_now(id);

	if (id != CLOCK_REALTIME && (b < a || c < b))
		fail("%s: vDSO %lld, syscall %lld, vDSO %lld are not in order", name, (long long)a, (long long)b, (long long)c);
	if (llabs(b - a) > slack || llabs(c - b) > slack)
		fail("%s: vDSO and syscall disagree: %lld, %lld, %lld ns", name, (long long)a, (long long)b, (long long)c);

	int64_t t1 = vdso_now(id);
	sleep_ms(50);
	int64_t t2 = vdso_now(id);
	if (t2 - t1 < 45 * 1000000LL || t2 - t1 > 2000 * 1000000LL)
		fail("%s through the vDSO moved %lld ns over a 50 ms sleep", name, (long long)(t2 - t1));
}

int main(int argc, char **argv)
{
	int64_t last, backwards = 0, start_mono;
	long iters = 0;

	if (argc < 2)
		die("usage: clock READY");
	victim_init();
	start_mono = last = vdso_now(CLOCK_MONOTONIC);

	while (!got_term) {
		int64_t now = vdso_now(CLOCK_MONOTONIC);

		if (now < last && !backwards)
			backwards = last - now;
		last = now;
		if (iters++ == 1)
			victim_ready(argv[1]);
		sleep_ms(5);
	}

	if (syscall(SYS_getpid) != victim_pid)
		fail("raw getpid() = %ld, was %d at start", syscall(SYS_getpid), victim_pid);
	if (backwards)
		fail("CLOCK_MONOTONIC went back by %lld ns", (long long)backwards);
	check_vdso_mapped();
	check_clock(CLOCK_MONOTONIC, "CLOCK_MONOTONIC");
	check_clock(CLOCK_BOOTTIME, "CLOCK_BOOTTIME");
	check_clock(CLOCK_REALTIME, "CLOCK_REALTIME");

	int64_t r = sys_now(CLOCK_REALTIME), g = tod_now();
	if (llabs(g - r) > 100 * 1000000LL)
		fail("gettimeofday %lld and CLOCK_REALTIME %lld disagree", (long long)g, (long long)r);
	int64_t g1 = tod_now();
	sleep_ms(50);
	int64_t g2 = tod_now();
	if (g2 - g1 < 45 * 1000000LL || g2 - g1 > 2000 * 1000000LL)
		fail("gettimeofday moved %lld ns over a 50 ms sleep", (long long)(g2 - g1));

	say("clock: %ld iterations over %lld ms", iters, (long long)((vdso_now(CLOCK_MONOTONIC) - start_mono) / 1000000));
	victim_finish();
}

// SPDX-License-Identifier: GPL-2.0
/*
 * vb_touch - map anonymous memory, touch every page with a pattern, verify
 * it, optionally hold the memory, then release it.
 *
 *   vb_touch -m MiB [-s seconds|-s -1|-U] [-p seed] [-n] [-H] [-r rounds]
 *            [-N node] [-F] [-l]
 *
 *   -m  size in MiB (required)
 *   -s  hold the touched memory this many seconds (-1: until killed),
 *       then check the pattern again
 *   -U  hold it until SIGUSR1, then check the pattern again (a test can
 *       check memory written before a migration on its destination)
 *   -p  pattern seed (default 1)
 *   -n  no hugepages: madvise(MADV_NOHUGEPAGE) the mapping
 *   -H  madvise(MADV_HUGEPAGE) the mapping
 *   -r  touch+verify this many rounds (default 1)
 *   -N  allocate only on this NUMA node (set_mempolicy(MPOL_BIND))
 *   -F  after the check, free three pages in four (MADV_DONTNEED) and
 *       hold the rest: free memory is then scattered 4 KiB pages
 *   -l  lock the pages still mapped at the end (mlock2(MLOCK_ONFAULT));
 *       with the vm.compact_unevictable_allowed sysctl at 0 compaction
 *       cannot move them
 *
 * Prints one TAP-like line; exit 0 on success, 1 if the mapping failed,
 * 2 on a pattern mismatch, 3 on bad usage.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "vb_util.h"

#define PAGE 4096UL
#define VB_MPOL_BIND 2	/* enum in <linux/mempolicy.h> */

static uint64_t word_for(uint64_t seed, uint64_t page, unsigned int slot)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ULL ^ (page << 3 | slot);

	x ^= x >> 29;
	x *= 0xbf58476d1ce4e5b9ULL;
	return x ^ (x >> 32);
}

/* Write three words in each page: first, middle and last. */
static void fill(unsigned char *p, size_t pages, uint64_t seed)
{
	for (size_t i = 0; i < pages; i++) {
		uint64_t *w = (uint64_t *)(p + i * PAGE);

		w[0] = word_for(seed, i, 0);
		w[PAGE / 16] = word_for(seed, i, 1);
		w[PAGE / 8 - 1] = word_for(seed, i, 2);
	}
}

static size_t check(const unsigned char *p, size_t pages, uint64_t seed)
{
	size_t bad = 0;

	for (size_t i = 0; i < pages; i++) {
		const uint64_t *w = (const uint64_t *)(p + i * PAGE);

		if (w[0] != word_for(seed, i, 0) ||
		    w[PAGE / 16] != word_for(seed, i, 1) ||
		    w[PAGE / 8 - 1] != word_for(seed, i, 2)) {
			if (bad < 5)
				fprintf(stderr, "vb_touch: mismatch in page %zu\n", i);
			bad++;
		}
	}
	return bad;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: vb_touch -m MiB [-s seconds|-U] [-p seed] [-n|-H] [-r rounds] [-N node] [-F] [-l]\n");
	exit(3);
}

int main(int argc, char **argv)
{
	long mib = -1, hold = 0, rounds = 1, node = -1;
	uint64_t seed = 1;
	int nohuge = 0, huge = 0, scatter = 0, lock = 0, usr1 = 0, c, sig;
	size_t len, pages, bad;
	sigset_t set;
	unsigned char *p;
	double t0, t1;

	while ((c = getopt(argc, argv, "m:s:p:nHr:N:FlU")) != -1) {
		switch (c) {
		case 'm': mib = strtol(optarg, NULL, 0); break;
		case 's': hold = strtol(optarg, NULL, 0); break;
		case 'p': seed = strtoull(optarg, NULL, 0); break;
		case 'n': nohuge = 1; break;
		case 'H': huge = 1; break;
		case 'r': rounds = strtol(optarg, NULL, 0); break;
		case 'N': node = strtol(optarg, NULL, 0); break;
		case 'F': scatter = 1; break;
		case 'l': lock = 1; break;
		case 'U': usr1 = 1; break;
		default: usage();
		}
	}
	if (mib <= 0 || rounds <= 0 || node >= 64 || (usr1 && hold))
		usage();
	/* Blocked from the start: a signal sent early waits for sigwait(). */
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	if (usr1)
		sigprocmask(SIG_BLOCK, &set, NULL);
	if (node >= 0) {
		unsigned long mask = 1UL << node;

		if (syscall(SYS_set_mempolicy, VB_MPOL_BIND, &mask, 64)) {
			printf("not ok 1 - vb_touch bind to node %ld: %s\n",
			       node, strerror(errno));
			return 1;
		}
	}

	len = (size_t)mib << 20;
	pages = len / PAGE;
	t0 = vb_now();
	p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		printf("not ok 1 - vb_touch mmap %ld MiB: %s\n", mib,
		       strerror(errno));
		return 1;
	}
	if (nohuge)
		madvise(p, len, MADV_NOHUGEPAGE);
	if (huge)
		madvise(p, len, MADV_HUGEPAGE);

	bad = 0;
	for (long r = 0; r < rounds; r++) {
		fill(p, pages, seed + r);
		bad += check(p, pages, seed + r);
	}
	t1 = vb_now();
	if (bad) {
		printf("not ok 1 - vb_touch %ld MiB: %zu bad pages\n", mib, bad);
		return 2;
	}
	if (scatter) {
		for (size_t i = 0; i < pages; i++)
			if (i % 4 && madvise(p + i * PAGE, PAGE, MADV_DONTNEED)) {
				printf("not ok 1 - vb_touch MADV_DONTNEED: %s\n",
				       strerror(errno));
				return 1;
			}
	}
	/* On fault: lock what is there without faulting the rest back in. */
	if (lock && mlock2(p, len, MLOCK_ONFAULT)) {
		printf("not ok 1 - vb_touch mlock2: %s\n", strerror(errno));
		return 1;
	}
	printf("ok 1 - vb_touch %ld MiB x%ld in %.3f s%s\n", mib, rounds,
	       t1 - t0, scatter ? ", 3 pages in 4 freed" : "");
	fflush(stdout);

	if (hold < 0) {
		for (;;)
			pause();
	}
	if (hold > 0 || usr1) {
		if (usr1)
			sigwait(&set, &sig);
		else
			sleep(hold);
		if (!scatter && check(p, pages, seed + rounds - 1)) {
			printf("not ok 2 - vb_touch pattern changed while held\n");
			return 2;
		}
	}
	munmap(p, len);
	return 0;
}

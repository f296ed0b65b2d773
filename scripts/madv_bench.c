// SPDX-License-Identifier: GPL-2.0
/*
 * madv_bench - the host's own limit for giving back guest-sized memory.
 *
 *   madv_bench [-m MiB]            (default 1536)
 *
 * Maps MiB of anonymous memory, 2 MiB aligned and MADV_HUGEPAGE, touches
 * every 4 KiB page, then times MADV_DONTNEED over all of it three ways,
 * each on a fresh mapping so that every pass starts from transparent huge
 * pages:
 *
 *   dontneed_4k_s     one madvise() per 4 KiB page (what QEMU 7.2 does for
 *                     each inflated PFN of 4 KiB-backed guest RAM)
 *   dontneed_2m_s     one madvise() per 2 MiB
 *   dontneed_all_s    one madvise() for the whole range
 *   willneed_4k_s     one MADV_WILLNEED per 4 KiB page over a range that
 *                     was touched and then dropped per 4 KiB (what QEMU 7.2
 *                     does for each deflated PFN)
 *
 * Also prints how much of each mapping was THP before the pass
 * (thp_*_kib, from /proc/self/smaps_rollup) and how long the touch took.
 * Output is "key value" lines; exit 0 on success, 1 on a system call
 * failure, 2 on bad usage.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define SZ_4K (4096UL)
#define SZ_2M (2UL << 20)

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* AnonHugePages of this process, in KiB; -1 if it cannot be read. */
static long anon_huge_kib(void)
{
	char line[256];
	long kib = -1;
	FILE *f = fopen("/proc/self/smaps_rollup", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "AnonHugePages: %ld kB", &kib) == 1)
			break;
	}
	fclose(f);
	return kib;
}

struct region {
	char *raw;	/* what mmap returned */
	size_t raw_len;
	char *p;	/* 2 MiB aligned start */
	size_t len;
};

static int region_map(struct region *r, size_t len)
{
	unsigned long start;

	r->len = len;
	r->raw_len = len + SZ_2M;
	r->raw = mmap(NULL, r->raw_len, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (r->raw == MAP_FAILED) {
		fprintf(stderr, "madv_bench: mmap %zu bytes: %s\n", r->raw_len,
			strerror(errno));
		return -1;
	}
	start = ((unsigned long)r->raw + SZ_2M - 1) & ~(SZ_2M - 1);
	r->p = (char *)start;
	if (madvise(r->p, r->len, MADV_HUGEPAGE))
		fprintf(stderr, "madv_bench: MADV_HUGEPAGE: %s (continuing)\n",
			strerror(errno));
	return 0;
}

static void region_unmap(struct region *r)
{
	munmap(r->raw, r->raw_len);
}

/* Write one byte in every 4 KiB page; return the seconds it took. */
static double region_touch(struct region *r)
{
	double t0 = now();

	for (size_t off = 0; off < r->len; off += SZ_4K)
		r->p[off] = (char)(off >> 12 | 1);
	return now() - t0;
}

/* MADV_DONTNEED the region in steps of step bytes; seconds, or -1. */
static double region_dontneed(struct region *r, size_t step)
{
	double t0 = now();

	for (size_t off = 0; off < r->len; off += step) {
		size_t n = r->len - off < step ? r->len - off : step;

		if (madvise(r->p + off, n, MADV_DONTNEED)) {
			fprintf(stderr, "madv_bench: MADV_DONTNEED: %s\n",
				strerror(errno));
			return -1;
		}
	}
	return now() - t0;
}

static int pass(const char *name, size_t len, size_t step)
{
	struct region r;
	double touch, t;
	long thp;

	if (region_map(&r, len))
		return -1;
	touch = region_touch(&r);
	thp = anon_huge_kib();
	t = region_dontneed(&r, step);
	region_unmap(&r);
	if (t < 0)
		return -1;
	printf("touch_%s_s %.6f\n", name, touch);
	printf("thp_%s_kib %ld\n", name, thp);
	printf("dontneed_%s_s %.6f\n", name, t);
	fflush(stdout);
	return 0;
}

/* The host side of a deflate: WILLNEED per 4 KiB after a per-4K drop. */
static int pass_willneed(size_t len)
{
	struct region r;
	double t0, t;

	if (region_map(&r, len))
		return -1;
	region_touch(&r);
	if (region_dontneed(&r, SZ_4K) < 0) {
		region_unmap(&r);
		return -1;
	}
	t0 = now();
	for (size_t off = 0; off < r.len; off += SZ_4K) {
		if (madvise(r.p + off, SZ_4K, MADV_WILLNEED)) {
			fprintf(stderr, "madv_bench: MADV_WILLNEED: %s\n",
				strerror(errno));
			region_unmap(&r);
			return -1;
		}
	}
	t = now() - t0;
	region_unmap(&r);
	printf("willneed_4k_s %.6f\n", t);
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv)
{
	long mib = 1536;
	size_t len;
	int c;

	while ((c = getopt(argc, argv, "m:")) != -1) {
		switch (c) {
		case 'm':
			mib = strtol(optarg, NULL, 0);
			break;
		default:
			fprintf(stderr, "usage: madv_bench [-m MiB]\n");
			return 2;
		}
	}
	if (mib <= 0 || mib % 2) {
		fprintf(stderr, "madv_bench: -m wants a positive even MiB count\n");
		return 2;
	}
	len = (size_t)mib << 20;
	printf("size_mib %ld\n", mib);
	if (pass("4k", len, SZ_4K) || pass("2m", len, SZ_2M) ||
	    pass("all", len, len) || pass_willneed(len))
		return 1;
	return 0;
}

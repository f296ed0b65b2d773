// SPDX-License-Identifier: GPL-2.0
/*
 * vb_kpf - count PageOffline pages from /proc/kpageflags.
 *
 *   vb_kpf                      every page frame the file covers
 *   vb_kpf START_PFN NR_PAGES   the frames [START_PFN, START_PFN + NR_PAGES)
 *
 * Prints "offline N nopage M frames F".  Exit 1 if the file cannot be
 * read, 3 on bad usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Bit numbers from <linux/kernel-page-flags.h>. */
#define VB_KPF_NOPAGE	20
#define VB_KPF_OFFLINE	23

#define BATCH 4096

int main(int argc, char **argv)
{
	unsigned long long start = 0, nr = ~0ULL, offline = 0, nopage = 0;
	unsigned long long frames = 0;
	static unsigned long long buf[BATCH];
	int fd;

	if (argc == 3) {
		start = strtoull(argv[1], NULL, 0);
		nr = strtoull(argv[2], NULL, 0);
	} else if (argc != 1) {
		fprintf(stderr, "usage: vb_kpf [START_PFN NR_PAGES]\n");
		return 3;
	}
	fd = open("/proc/kpageflags", O_RDONLY);
	if (fd < 0) {
		fprintf(stderr, "vb_kpf: /proc/kpageflags: %s\n", strerror(errno));
		return 1;
	}
	while (frames < nr) {
		unsigned long long want = nr - frames;
		ssize_t got;

		if (want > BATCH)
			want = BATCH;
		got = pread(fd, buf, want * sizeof(buf[0]),
			    (off_t)(start + frames) * sizeof(buf[0]));
		if (got < 0) {
			fprintf(stderr, "vb_kpf: read at pfn %#llx: %s\n",
				start + frames, strerror(errno));
			return 1;
		}
		if (got == 0)
			break;
		for (ssize_t i = 0; i < got / (ssize_t)sizeof(buf[0]); i++) {
			offline += buf[i] >> VB_KPF_OFFLINE & 1;
			nopage += buf[i] >> VB_KPF_NOPAGE & 1;
		}
		frames += got / sizeof(buf[0]);
	}
	printf("offline %llu nopage %llu frames %llu\n", offline, nopage,
	       frames);
	return 0;
}

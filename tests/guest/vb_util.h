/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Small helpers shared by the vballoon guest test programs.
 */
#ifndef VB_UTIL_H
#define VB_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <time.h>

/* Value of one /proc/meminfo field in kB, or -1 if it is missing. */
static inline long long vb_meminfo_kb(const char *field)
{
	char line[256];
	size_t n = strlen(field);
	long long val = -1;
	FILE *f = fopen("/proc/meminfo", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, field, n) == 0 && line[n] == ':') {
			val = strtoll(line + n + 1, NULL, 10);
			break;
		}
	}
	fclose(f);
	return val;
}

/* Read one unsigned decimal number from a file; -1 on any error. */
static inline long long vb_read_num(const char *path)
{
	char buf[64];
	char *end;
	long long v;
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	if (!fgets(buf, sizeof(buf), f)) {
		fclose(f);
		return -1;
	}
	fclose(f);
	v = strtoll(buf, &end, 10);
	if (end == buf || (*end != '\n' && *end != '\0') || v < 0)
		return -1;
	return v;
}

static inline double vb_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

#endif

// SPDX-License-Identifier: GPL-2.0
/*
 * vb_meminfo - print /proc/meminfo fields as "name kB" lines.
 *
 *   vb_meminfo              MemTotal, MemFree, MemAvailable, Cached, AnonPages
 *   vb_meminfo FIELD...     just the given fields, one number a line
 *
 * Exit 1 if a requested field does not exist.
 */
#include <stdio.h>

#include "vb_util.h"

int main(int argc, char **argv)
{
	static const char *const dflt[] = {
		"MemTotal", "MemFree", "MemAvailable", "Cached", "AnonPages",
	};
	int rc = 0;

	if (argc < 2) {
		for (size_t i = 0; i < sizeof(dflt) / sizeof(dflt[0]); i++)
			printf("%s %lld\n", dflt[i], vb_meminfo_kb(dflt[i]));
		return 0;
	}
	for (int i = 1; i < argc; i++) {
		long long v = vb_meminfo_kb(argv[i]);

		if (v < 0) {
			fprintf(stderr, "vb_meminfo: no field %s\n", argv[i]);
			rc = 1;
		}
		printf("%lld\n", v);
	}
	return rc;
}

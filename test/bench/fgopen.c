// fgopen: the file tree maker and the opener of test/bench/bench.sh.
//
//   fgopen create DIR COUNT SIZE
//       makes COUNT regular files of SIZE bytes of text (a C comment line,
//       repeated and cut to SIZE) under DIR: DIR/dNNNNN/fNNNNNNN, 1000 files
//       per directory. Every file is a distinct inode.
//   fgopen open DIR COUNT PROCS
//       opens (O_RDONLY) and closes each of those COUNT files once, split
//       between PROCS processes (file i goes to process i % PROCS), and
//       times each open() with CLOCK_MONOTONIC. Prints one line:
//         files=N denied=D wall_ns=W p50_ns=A p90_ns=B p99_ns=C max_ns=M
//       An open that fails with EPERM (a denial) is counted; any other
//       failure is fatal.
//
// Exit status: 0 done, 1 a file could not be made or opened, 2 bad usage.
// Built by bench.sh with gcc; needs nothing but libc.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PER_DIR 1000

static void usage(void)
{
	fprintf(stderr, "usage: fgopen create DIR COUNT SIZE | fgopen open DIR COUNT PROCS\n");
	exit(2);
}

static long number(const char *s, long min)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *end || end == s || v < min)
		usage();
	return v;
}

static void path_of(char *buf, size_t n, const char *dir, long i)
{
	snprintf(buf, n, "%s/d%05ld/f%07ld", dir, i / PER_DIR, i);
}

static int create(const char *dir, long count, long size)
{
	static const char line[] = "/* fanguard bench: a small text file, never opened before */\n";
	char *content = malloc(size + 1);
	char path[4096];
	if (!content) {
		perror("fgopen: malloc");
		return 1;
	}
	for (long i = 0; i < size; i++)
		content[i] = line[i % (sizeof(line) - 1)];
	for (long i = 0; i < count; i++) {
		if (i % PER_DIR == 0) {
			snprintf(path, sizeof(path), "%s/d%05ld", dir, i / PER_DIR);
			if (mkdir(path, 0755) && errno != EEXIST) {
				fprintf(stderr, "fgopen: mkdir %s: %s\n", path, strerror(errno));
				return 1;
			}
		}
		path_of(path, sizeof(path), dir, i);
		int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (fd < 0) {
			fprintf(stderr, "fgopen: create %s: %s\n", path, strerror(errno));
			return 1;
		}
		if (size > 0 && write(fd, content, size) != size) {
			fprintf(stderr, "fgopen: write %s: %s\n", path, strerror(errno));
			return 1;
		}
		if (close(fd)) {
			fprintf(stderr, "fgopen: close %s: %s\n", path, strerror(errno));
			return 1;
		}
	}
	free(content);
	return 0;
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

// one opener: files p, p+procs, ...; latencies into lat[i], -1 for a denial.
static int opener(const char *dir, long count, long procs, long p, int64_t *lat)
{
	char path[4096];
	for (long i = p; i < count; i += procs) {
		path_of(path, sizeof(path), dir, i);
		int64_t t0 = now_ns();
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		int64_t t1 = now_ns();
		if (fd < 0) {
			if (errno == EPERM) {
				lat[i] = -1;
				continue;
			}
			fprintf(stderr, "fgopen: open %s: %s\n", path, strerror(errno));
			return 1;
		}
		close(fd);
		lat[i] = t1 - t0;
	}
	return 0;
}

static int open_all(const char *dir, long count, long procs)
{
	// shared with the children, who write their own slots only
	int64_t *lat = mmap(NULL, count * sizeof(int64_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (lat == MAP_FAILED) {
		perror("fgopen: mmap");
		return 1;
	}
	int64_t t0 = now_ns();
	int rc = 0;
	if (procs == 1) {
		rc = opener(dir, count, 1, 0, lat);
	} else {
		for (long p = 0; p < procs; p++) {
			pid_t pid = fork();
			if (pid < 0) {
				perror("fgopen: fork");
				return 1;
			}
			if (pid == 0)
				_exit(opener(dir, count, procs, p, lat));
		}
		int st;
		for (long p = 0; p < procs; p++) {
			if (wait(&st) < 0) {
				perror("fgopen: wait");
				return 1;
			}
			if (!WIFEXITED(st) || WEXITSTATUS(st))
				rc = 1;
		}
	}
	int64_t wall = now_ns() - t0;
	if (rc)
		return rc;
	long n = 0, denied = 0;
	for (long i = 0; i < count; i++) {
		if (lat[i] < 0)
			denied++;
		else
			lat[n++] = lat[i];
	}
	qsort(lat, n, sizeof(int64_t), cmp64);
#define Q(q) (n ? lat[(long)((n - 1) * (q) + 0.5)] : 0)
	printf("files=%ld denied=%ld wall_ns=%lld p50_ns=%lld p90_ns=%lld p99_ns=%lld max_ns=%lld\n", count, denied,
	       (long long)wall, (long long)Q(0.50), (long long)Q(0.90), (long long)Q(0.99),
	       (long long)(n ? lat[n - 1] : 0));
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 5)
		usage();
	long count = number(argv[3], 1);
	if (!strcmp(argv[1], "create"))
		return create(argv[2], count, number(argv[4], 0));
	if (!strcmp(argv[1], "open"))
		return open_all(argv[2], count, number(argv[4], 1));
	usage();
}

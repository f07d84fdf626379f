/* The sequence of cthon04's special/op_chmod, written for fastnfs's tests:
 * open a file read-write, chmod it 000, write, close.  NFSv3 has no open, so
 * the client flushes the data at close and the server must let the owner
 * write whatever the mode says now (RFC 1813 section 4.4); then the data is
 * read back from the server (O_DIRECT, through an fd opened before the chmod).
 * usage: opchmod FILE [UID]   (with UID: setgid/setuid to it first) */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char msg[] = "written after chmod 000\n";
static char buf[65536] __attribute__((aligned(4096)));

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	if (argc > 2) {
		unsigned id = (unsigned)atoi(argv[2]);
		if (setgid(id) || setuid(id)) {
			perror("setuid");
			return 2;
		}
	}
	int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0644);
	int rd = fd < 0 ? -1 : open(argv[1], O_RDONLY | O_DIRECT);
	if (fd < 0 || rd < 0) {
		perror("open");
		return 1;
	}
	if (chmod(argv[1], 0)) {
		perror("chmod");
		return 1;
	}
	if (write(fd, msg, sizeof msg - 1) != (ssize_t)(sizeof msg - 1)) {
		perror("write");
		return 1;
	}
	if (close(fd)) {
		perror("error on close");
		return 1;
	}
	ssize_t n = pread(rd, buf, sizeof buf, 0);
	if (n < 0) {
		perror("read");
		return 1;
	}
	if (n != (ssize_t)(sizeof msg - 1) || memcmp(buf, msg, (size_t)n)) {
		fprintf(stderr, "read back %zd bytes, not what was written\n", n);
		return 1;
	}
	close(rd);
	puts("opchmod: ok");
	return 0;
}

/*
 * iscsiadm: the compat command as a forwarding client. No logic lives here.
 *
 * Why C: programs such as os-brick run iscsiadm 13 times per volume attach and
 * detach. Measured in the lab guest (median of 9, same boot; bench/results/
 * cli-floors.md): Debian's C iscsiadm -m session 0.062 s, /usr/bin/python3 -I -S
 * with only a socket round trip 0.136 s, the venv's python -I -S 0.313 s. No
 * Python client can start as fast as the C iscsiadm answers, so this program
 * only forwards: argv, the environment keys a run reads, and which of its fds
 * are terminals go to iscsikitd's "cli" request (initiator/protocol.py), which
 * runs iscsikit-adm's own code in the warm daemon; the output comes back as
 * frames, copied unchanged to fds 1 and 2; the exit frame's code is ours.
 *
 * When the daemon cannot be reached, or refuses the request (an older daemon,
 * a non-root caller), it execs the Python iscsikit-adm next to it with the same
 * argv, so record edits work with the daemon down and every message stays the
 * Python CLI's. ISCSIKIT_ARGV0 tells that CLI the name it was called by.
 *
 * Built with -DFORWARD_TARGET, the same program is `iscsikit-target`: it forwards
 * to iscsikit-targetd (cli/targetd.py) and falls back to the Python
 * iscsikit-target-local; the target's file arguments may be relative, so that
 * build sends its working directory too. The server, not this program, decides
 * what it serves (the interactive shell never is): a refusal is a fallback.
 *
 * Protocol constants below must equal protocol.py's (tests/unit/test_daemon_protocol.py
 * and tests/unit/test_target_served.py check them, and run this program against a
 * real server on the host).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define PROTOCOL_VERSION 2
#ifdef FORWARD_TARGET
/* mgmt's TARGET_SOCKET, protocol.TARGET_CLI_ENV */
#define SOCKET_ENV "ISCSIKIT_TARGET_SOCKET"
#define TARGET_SOCKET "/run/iscsikit/iscsikit-targetd.sock"
#define SERVED_PATH TARGET_SOCKET
#define FALLBACK "iscsikit-target-local"
#define PROG "iscsikit-target"
#define CLOSED_MSG "the target server closed the connection during the command"
#define CLI_ENV_KEYS "ISCSIKIT_TARGET_SAVEFILE", "ISCSIKIT_TARGET_WORKERS", "COLUMNS", "TERM", "NO_COLOR"
#else
/* mgmt's DEFAULT_SOCKET, protocol.CLI_ENV */
#define SOCKET_ENV "ISCSIKIT_SOCKET"
#define DEFAULT_SOCKET "/run/iscsikit/iscsikitd.sock"
#define SERVED_PATH DEFAULT_SOCKET
#define FALLBACK "iscsikit-adm"
#define PROG "iscsiadm"
#define CLOSED_MSG "iSCSI daemon closed the connection during the command"
#define CLI_ENV_KEYS "ISCSIKIT_DB_ROOT", "ISCSIKIT_SYSFS_ROOT", "ISCSIKIT_SOCKET", "ISCSIKIT_DEBUG", \
	"COLUMNS", "TERM", "NO_COLOR"
#endif
#define FRAME_OUT 'o'
#define FRAME_ERR 'e'
#define FRAME_EXIT 'x'
#define FRAME_HEADER 5
#define MAX_FRAME (1 << 20)
#define MAX_LINE (1 << 20)
#define EXIT_COMM_ERR 18 /* ISCSID_COMM_ERR: the daemon went away mid-run */

static const char *const cli_env[] = {CLI_ENV_KEYS, NULL};

struct buf {
	char *p;
	size_t len, cap;
};

static void put(struct buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->p = realloc(b->p, b->cap);
		if (!b->p)
			exit(EXIT_COMM_ERR);
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

static void puts_(struct buf *b, const char *s) { put(b, s, strlen(s)); }

/* A JSON string (RFC 8259 §7): quote, backslash and control characters escaped. */
static void put_json(struct buf *b, const char *s)
{
	char esc[8];
	put(b, "\"", 1);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			put(b, esc, 2);
		} else if (c < 0x20) {
			snprintf(esc, sizeof esc, "\\u%04x", c);
			put(b, esc, 6);
		} else {
			put(b, (const char *)&c, 1);
		}
	}
	put(b, "\"", 1);
}

static void fallback(char **argv)
{
	const char *run;
#ifdef FALLBACK_DIR
	/* a package's build names the folder: its /sbin/iscsiadm is not beside /usr/bin's scripts */
	run = FALLBACK_DIR "/" FALLBACK;
#else
	char self[PATH_MAX], path[PATH_MAX + 32];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n < 0) {
		perror(PROG ": /proc/self/exe");
		exit(EXIT_COMM_ERR);
	}
	self[n] = 0;
	char *slash = strrchr(self, '/');
	*slash = 0;
	snprintf(path, sizeof path, "%s/" FALLBACK, self);
	run = path;
#endif
	setenv("ISCSIKIT_ARGV0", argv[0], 1);
	execv(run, argv);
	fprintf(stderr, PROG ": cannot run %s: %s\n", run, strerror(errno));
	exit(EXIT_COMM_ERR);
}

static int read_full(int fd, char *p, size_t n)
{
	while (n) {
		ssize_t r = read(fd, p, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static void write_full(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return; /* a closed stdout: the C iscsiadm drops output too */
		p += w;
		n -= (size_t)w;
	}
}

int main(int argc, char **argv)
{
	const char *path = getenv(SOCKET_ENV);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (!path || !*path)
		path = SERVED_PATH;
	if (strlen(path) >= sizeof sa.sun_path)
		fallback(argv);
	strcpy(sa.sun_path, path);
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof sa) < 0)
		fallback(argv); /* daemon down: the Python CLI runs it in-process */

	struct buf req = {0};
	char num[64];
	snprintf(num, sizeof num, "{\"v\":%d,\"op\":\"cli\",\"args\":{\"argv\":[", PROTOCOL_VERSION);
	puts_(&req, num);
	for (int i = 0; i < argc; i++) {
		if (i)
			puts_(&req, ",");
		put_json(&req, argv[i]);
	}
	puts_(&req, "],\"env\":{");
	int first = 1;
	for (int i = 0; cli_env[i]; i++) {
		const char *v = getenv(cli_env[i]);
		if (!v)
			continue;
		if (!first)
			puts_(&req, ",");
		first = 0;
		put_json(&req, cli_env[i]);
		puts_(&req, ":");
		put_json(&req, v);
	}
	puts_(&req, "},\"tty\":[");
	for (int fd = 0; fd < 3; fd++)
		puts_(&req, isatty(fd) ? (fd ? ",true" : "true") : (fd ? ",false" : "false"));
	puts_(&req, "]");
#ifdef FORWARD_TARGET
	char cwd[PATH_MAX];
	if (!getcwd(cwd, sizeof cwd))
		fallback(argv); /* no working directory to name: the command runs here */
	puts_(&req, ",\"cwd\":");
	put_json(&req, cwd);
#endif
	puts_(&req, "}}\n");
	write_full(s, req.p, req.len);

	/* the reply line: {"v":2,"ok":true,...} or a refusal, which the Python CLI handles itself */
	char *line = malloc(MAX_LINE);
	size_t have = 0;
	char *nl = NULL;
	while (!nl) {
		if (have >= MAX_LINE)
			fallback(argv);
		ssize_t r = read(s, line + have, MAX_LINE - have);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			fallback(argv);
		nl = memchr(line + have, '\n', (size_t)r);
		have += (size_t)r;
	}
	*nl = 0;
	snprintf(num, sizeof num, "{\"v\":%d,\"ok\":true", PROTOCOL_VERSION);
	if (strncmp(line, num, strlen(num)) != 0) {
		close(s);
		fallback(argv);
	}

	/* frames: what came after the line first, then the socket */
	size_t off = (size_t)(nl + 1 - line);
	char *frame = malloc(MAX_FRAME);
	for (;;) {
		unsigned char head[FRAME_HEADER];
		size_t got = 0;
		while (got < FRAME_HEADER && off < have)
			head[got++] = (unsigned char)line[off++];
		if (got < FRAME_HEADER && read_full(s, (char *)head + got, FRAME_HEADER - got) < 0)
			break;
		size_t size = ((size_t)head[1] << 24) | ((size_t)head[2] << 16) | ((size_t)head[3] << 8) | head[4];
		if (size > MAX_FRAME)
			break;
		size_t from_line = have - off < size ? have - off : size;
		memcpy(frame, line + off, from_line);
		off += from_line;
		if (read_full(s, frame + from_line, size - from_line) < 0)
			break;
		if (head[0] == FRAME_EXIT && size == 4)
			return (int)(((unsigned)(unsigned char)frame[0] << 24) | ((unsigned char)frame[1] << 16) |
				     ((unsigned char)frame[2] << 8) | (unsigned char)frame[3]);
		if (head[0] == FRAME_OUT)
			write_full(1, frame, size);
		else if (head[0] == FRAME_ERR)
			write_full(2, frame, size);
		else
			break;
	}
	fprintf(stderr, PROG ": " CLOSED_MSG "\n");
	return EXIT_COMM_ERR;
}

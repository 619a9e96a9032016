/* netdelay QUEUE DELAY_MS: hold every packet of NFQUEUE QUEUE for DELAY_MS (one way,
 * fractions allowed), then accept it, strictly in arrival order.
 *
 * Stands in for netem, which this kernel lacks (bench/latency.py sets up the iptables
 * rules). One thread: ppoll() waits for either the next packet or the due time of the
 * oldest one held; each packet is stamped when read. The delay is the same for every
 * packet, so due times rise with arrival and a FIFO ring is all the scheduling needed.
 * Prints "ready" on stdout once the queue is bound; exits on SIGTERM/SIGINT after
 * accepting whatever it still holds. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif
#ifndef NETLINK_NO_ENOBUFS
#define NETLINK_NO_ENOBUFS 5
#endif

/* Queue maxlen = ring size: the kernel never holds more packets for us than this, so
 * the ring cannot overflow (if it ever did, the oldest packet is let go early: order
 * is kept, only that packet's delay is cut short). */
#define RING 65536u
#define RCVBUF (32 << 20) /* the kernel doubles it: room for ~64 Ki queued-packet messages */
#define BURST 256         /* packets read per wake-up, so releases stay on time in a flood */

static struct { uint32_t id; uint64_t due; } ring[RING];
static unsigned head, count, peak;
static uint64_t delay_ns, total;
static volatile sig_atomic_t stop;

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Accept every held packet due by `now` with one batch verdict: it covers all queued
 * ids up to the given one, and ids rise in queue order, so FIFO order is kept and a
 * whole burst costs one netlink message. */
static void release(struct nfq_q_handle *qh, uint64_t now) {
    unsigned n = 0;
    while (n < count && ring[(head + n) % RING].due <= now) n++;
    if (!n) return;
    if (nfq_set_verdict_batch(qh, ring[(head + n - 1) % RING].id, NF_ACCEPT) < 0) {
        perror("netdelay: verdict");
        exit(1);
    }
    head = (head + n) % RING;
    count -= n;
}

static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg, struct nfq_data *nfa,
                     void *data) {
    (void)msg; (void)data;
    struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
    if (!ph) return 0;
    if (count == RING) release(qh, ring[head].due);
    unsigned tail = (head + count++) % RING;
    ring[tail].id = ntohl(ph->packet_id);
    ring[tail].due = now_ns() + delay_ns;
    if (count > peak) peak = count;
    total++;
    return 0;
}

static void on_signal(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv) {
    char *end;
    if (argc != 3) {
        fprintf(stderr, "usage: %s QUEUE DELAY_MS\n", argv[0]);
        return 2;
    }
    unsigned long q = strtoul(argv[1], &end, 10);
    if (*end || q > 65535) { fprintf(stderr, "netdelay: bad queue %s\n", argv[1]); return 2; }
    double ms = strtod(argv[2], &end);
    if (*end || !(ms >= 0 && ms < 60000)) { fprintf(stderr, "netdelay: bad delay %s\n", argv[2]); return 2; }
    delay_ns = (uint64_t)(ms * 1e6);

    /* SIGTERM/SIGINT stay blocked except inside ppoll, so a signal can never slip in
     * between the check of `stop` and the wait. */
    sigset_t block, waitmask;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, &waitmask);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    struct nfq_handle *h = nfq_open();
    if (!h) { perror("netdelay: nfq_open"); return 1; }
    struct nfq_q_handle *qh = nfq_create_queue(h, (uint16_t)q, on_packet, NULL);
    if (!qh) { perror("netdelay: nfq_create_queue (queue in use?)"); return 1; }
    /* Only the packet id is needed: copy no payload. */
    if (nfq_set_mode(qh, NFQNL_COPY_META, 0) < 0) { perror("netdelay: nfq_set_mode"); return 1; }
    if (nfq_set_queue_maxlen(qh, RING) < 0) { perror("netdelay: maxlen"); return 1; }
    /* GSO: take loopback's 64 KiB segments whole instead of having the kernel split them.
     * FAIL_OPEN: should the queue or our socket ever be full, the kernel lets a packet
     * through undelayed instead of dropping it (a drop would cost TCP a retransmit
     * timeout, i.e. a stall). */
    uint32_t flags = NFQA_CFG_F_GSO | NFQA_CFG_F_FAIL_OPEN;
    if (nfq_set_queue_flags(qh, flags, flags) < 0) perror("netdelay: queue flags (ignored)");

    /* On a busy machine a normal task can wake several ms after its timer; a real-time
     * one preempts the rest at once. It does little work per packet. Best effort. */
    struct sched_param sp = {.sched_priority = 10};
    if (sched_setscheduler(0, SCHED_FIFO, &sp) < 0) perror("netdelay: SCHED_FIFO (continuing)");

    int fd = nfq_fd(h);
    nfnl_rcvbufsiz(nfq_nfnlh(h), RCVBUF); /* SO_RCVBUFFORCE as root */
    int one = 1;                         /* an overrun must not turn recv() into an error */
    setsockopt(fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof one);

    printf("ready\n");
    fflush(stdout);

    static char buf[65536] __attribute__((aligned));
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    while (!stop) {
        uint64_t now = now_ns();
        release(qh, now);
        struct timespec ts, *timeout = NULL;
        if (count) {
            uint64_t wait = ring[head].due - now; /* > 0: release() took all due ones */
            ts.tv_sec = (time_t)(wait / 1000000000u);
            ts.tv_nsec = (long)(wait % 1000000000u);
            timeout = &ts;
        }
        int r = ppoll(&pfd, 1, timeout, &waitmask);
        if (r < 0) {
            if (errno == EINTR) continue;
            perror("netdelay: ppoll");
            return 1;
        }
        for (int i = 0; r > 0 && i < BURST; i++) {
            ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                if (errno == ENOBUFS) continue; /* those packets went through (FAIL_OPEN) */
                perror("netdelay: recv");
                return 1;
            }
            nfq_handle_packet(h, buf, (int)n);
        }
    }
    /* Unbinding the queue would drop what it holds: let it all go first. */
    release(qh, UINT64_MAX);
    fprintf(stderr, "netdelay: queue %lu, %.3f ms: %llu packets, at most %u held at once\n",
            q, ms, (unsigned long long)total, peak);
    nfq_destroy_queue(qh);
    nfq_close(h);
    return 0;
}

// harness drives breeze.so the way Envoy's worker thread does, with no
// sockets: it feeds request frames into the library's exported entry
// points from memory (downstream data, upstream connection ready, upstream
// data, events), collects what the plugin writes, and answers each request
// the plugin writes upstream with an echo server's response, so that what
// runs is exactly the Go side of Breeze in Envoy: the cgo crossings, the
// shim's copies, the plugin. It reports the process's CPU time per request
// (getrusage: the harness's own C work is a few memcpy per request) and the
// Go allocations per request (runtime/metrics, through the library's
// breezeHarnessAllocs when it has one).
//
// Usage: harness LIB CONFIG.any PROTO REQUESTS RESPONSE CONNS INFLIGHT WARMUP N
//   PROTO     dubbo | thrift (framed, strict binary)
//   REQUESTS  the request frames of the mix, concatenated, sent in turn
//   RESPONSE  the echo's response frame; its id is set per request
// It prints "result ..." and "done", or "error ..." and exits 5.
#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

typedef struct { const char *p; ptrdiff_t n; } GoString;

static int thrift; // else dubbo

static void fail(const char *msg, long a) {
  printf("error %s %ld\n", msg, a);
  fflush(stdout);
  exit(5);
}

static uint64_t be(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++) v = v << 8 | p[i];
  return v;
}
static void put_be(unsigned char *p, int n, uint64_t v) {
  for (int i = n - 1; i >= 0; i--, v >>= 8) p[i] = v & 0xff;
}

// frame_len: the length of the frame at p (n bytes available), 0 when
// incomplete. id_at: where its request id is, and how wide.
static size_t frame_len(const unsigned char *p, size_t n) {
  if (thrift) return n < 4 ? 0 : (4 + be(p, 4) <= n ? 4 + be(p, 4) : 0);
  if (n < 16) return 0;
  if (p[0] != 0xda || p[1] != 0xbb) fail("dubbo: bad magic at offset", 0);
  size_t l = 16 + be(p + 12, 4);
  return l <= n ? l : 0;
}
static size_t id_at(const unsigned char *p, int *width) {
  if (thrift) {
    *width = 4;
    return 12 + be(p + 8, 4);
  }
  *width = 8;
  return 4;
}

// --- buffers
typedef struct { unsigned char *p; size_t n, cap; } buf;
static void append(buf *b, const void *p, size_t n) {
  if (b->n + n > b->cap) {
    b->cap = (b->n + n) * 2;
    b->p = realloc(b->p, b->cap);
  }
  memcpy(b->p + b->n, p, n);
  b->n += n;
}
static void consume(buf *b, size_t n) {
  memmove(b->p, b->p + n, b->n - n);
  b->n -= n;
}

// Callbacks may come from Go goroutines other than this thread's (a
// timer's): mu guards what they touch; this thread never holds it while
// it calls into Go.
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

#define MAX_CONNS 4096
#define MAX_INFLIGHT 64
static struct down {
  void *wrapper;
  buf written, in;
  uint64_t next_id, outstanding[MAX_INFLIGHT];
  int n_out, owed, kind;
} downs[MAX_CONNS];
static int n_downs;
static struct up {
  void *wrapper;
  uint64_t conn_id;
  int ready;
  buf in, out;
} ups[MAX_CONNS];
static int n_ups;

static buf resp;   // the response template
static size_t resp_id;
static int resp_w;
static long answered, bad, requests_upstream;
static int finished; // the run is over: the plugin may close what it likes

static struct down *down_of(void *w) {
  for (int i = 0; i < n_downs; i++)
    if (downs[i].wrapper == w) return &downs[i];
  fail("write on an unknown downstream wrapper", 0);
  return NULL;
}
static struct up *up_of(void *w) {
  for (int i = 0; i < n_ups; i++)
    if (ups[i].wrapper == w) return &ups[i];
  fail("write on an unknown upstream wrapper", 0);
  return NULL;
}

// --- the C API Envoy offers Go network filters
// Envoy posts a write to the worker thread, which runs it through the
// filter chain (the Go filter's OnWrite, a copy into Go) before the
// socket: the loop does both (deliver).
int envoyGoFilterDownstreamWrite(void *f, void *p, int len, int end_stream) {
  pthread_mutex_lock(&mu);
  append(&down_of(f)->written, p, len);
  pthread_mutex_unlock(&mu);
  return 0;
}
int envoyGoFilterDownstreamClose(void *f, int t) {
  if (!finished) fail("the plugin closed a downstream connection, type", t);
  return 0;
}
void envoyGoFilterDownstreamFinalize(void *f, int reason) {}
static const char addr[] = "127.0.0.1:40000";
int envoyGoFilterDownstreamInfo(void *f, int t, void *ret) {
  ((GoString *)ret)->p = addr;
  ((GoString *)ret)->n = sizeof(addr) - 1;
  return 0;
}
int envoyGoFilterGetFilterState(void *w, void *k, void *v) { return 0; }
int envoyGoFilterSetFilterState(void *w, void *k, void *v, int a, int b, int c) { return 0; }
void *envoyGoFilterUpstreamConnect(void *lib, void *a, uint64_t id) {
  pthread_mutex_lock(&mu);
  if (n_ups == MAX_CONNS) fail("too many upstream connections", n_ups);
  struct up *u = &ups[n_ups++];
  u->wrapper = malloc(64); // stands for Envoy's upstream connection object
  u->conn_id = id;
  pthread_mutex_unlock(&mu);
  return u->wrapper;
}
int envoyGoFilterUpstreamConnEnableHalfClose(void *u, int e) { return 0; }
int envoyGoFilterUpstreamWrite(void *w, void *p, int len, int end) {
  pthread_mutex_lock(&mu);
  append(&up_of(w)->in, p, len);
  pthread_mutex_unlock(&mu);
  return 0;
}
int envoyGoFilterUpstreamClose(void *u, int t) {
  if (!finished) fail("the plugin closed an upstream connection, type", t);
  return 0;
}
void envoyGoFilterUpstreamFinalize(void *u, int r) {}
int envoyGoFilterUpstreamInfo(void *u, int t, void *ret) { return 0; }
void envoyGoFilterLog(uint32_t level, void *data, int len) {
  if (level >= 3) printf("log %u %.*s\n", level, len, (const char *)data);
}
uint32_t envoyGoFilterLogLevel(void) { return 3; }

static char *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) { perror(path); exit(2); }
  fseek(f, 0, SEEK_END);
  *n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = malloc(*n ? *n : 1);
  if (fread(b, 1, *n, f) != *n) { perror(path); exit(2); }
  fclose(f);
  return b;
}
static void *sym(void *lib, const char *name) {
  void *s = dlsym(lib, name);
  if (!s) { printf("error missing symbol %s\n", name); exit(2); }
  return s;
}

typedef uint64_t (*config_fn)(uint64_t, uint64_t, uint64_t, uint64_t);
typedef uint64_t (*conn_fn)(void *, uint64_t, uint64_t, uint64_t);
typedef uint64_t (*data_fn)(void *, uint64_t, uint64_t, int, int);
typedef void (*updata_fn)(void *, uint64_t, uint64_t, int, int);
typedef void (*ready_fn)(void *, uint64_t);
typedef void (*event_fn)(void *, int);
typedef uint64_t (*allocs_fn)(void);

static data_fn on_data;
static unsigned char **kinds;
static size_t *kind_len;
static int n_kinds;
static long budget;
static buf frame;

static void send_one(struct down *d) {
  if (budget == 0) return;
  budget--;
  if (d->n_out == MAX_INFLIGHT) fail("in flight over", MAX_INFLIGHT);
  frame.n = 0;
  append(&frame, kinds[d->kind], kind_len[d->kind]);
  d->kind = (d->kind + 1) % n_kinds;
  int w;
  size_t at = id_at(frame.p, &w);
  uint64_t id = d->next_id++ & (thrift ? 0x7fffffff : ~0ULL);
  put_be(frame.p + at, w, id);
  d->outstanding[d->n_out++] = id;
  uint64_t slice[2] = {(uint64_t)(uintptr_t)frame.p, frame.n};
  on_data(d->wrapper, frame.n, (uint64_t)(uintptr_t)slice, 1, 0);
}

// echo answers every whole request frame written to u, in one buffer.
static void echo(struct up *u) {
  size_t n;
  u->out.n = 0;
  while ((n = frame_len(u->in.p, u->in.n)) > 0) {
    int w;
    size_t at = id_at(u->in.p, &w);
    if (!thrift && (u->in.p[2] & 0x20)) { // a Dubbo heartbeat: its reply
      unsigned char hb[17] = {0xda, 0xbb, 0x22, 20};
      memcpy(hb + 4, u->in.p + 4, 8);
      put_be(hb + 12, 4, 1);
      hb[16] = 'N';
      append(&u->out, hb, sizeof hb);
    } else {
      size_t start = u->out.n;
      append(&u->out, resp.p, resp.n);
      memcpy(u->out.p + start + resp_id, u->in.p + at, w);
      requests_upstream++;
    }
    consume(&u->in, n);
  }
}

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e9 + t.tv_nsec;
}
static double cpu_ns(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e9 + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e3;
}

static updata_fn on_up_data;
static ready_fn on_ready;
static data_fn on_write;

// deliver runs what the plugin wrote to d through its OnWrite, then
// checks each whole response: one of d's requests in flight, and the
// echo's response byte for byte but for its id.
static int deliver(struct down *d) {
  pthread_mutex_lock(&mu);
  buf w = d->written;
  d->written = (buf){0};
  pthread_mutex_unlock(&mu);
  if (w.n == 0) {
    free(w.p);
    return 0;
  }
  uint64_t slice[2] = {(uint64_t)(uintptr_t)w.p, w.n};
  on_write(d->wrapper, w.n, (uint64_t)(uintptr_t)slice, 1, 0);
  append(&d->in, w.p, w.n);
  free(w.p);
  size_t n;
  while ((n = frame_len(d->in.p, d->in.n)) > 0) {
    int iw;
    size_t at = id_at(d->in.p, &iw);
    uint64_t id = be(d->in.p + at, iw);
    int found = -1;
    for (int i = 0; i < d->n_out; i++)
      if (d->outstanding[i] == id) found = i;
    int same = n == resp.n && memcmp(d->in.p, resp.p, at) == 0 && memcmp(d->in.p + at + iw, resp.p + at + iw, n - at - iw) == 0;
    if (found < 0 || !same) {
      if (bad++ < 3) printf("bad response id=%llu in_flight=%d len=%zu want_len=%zu\n", (unsigned long long)id, found >= 0, n, resp.n);
    } else {
      d->outstanding[found] = d->outstanding[--d->n_out];
      answered++;
      d->owed++;
    }
    consume(&d->in, n);
  }
  return 1;
}

// run sends n requests, keeping inflight per connection, until all are answered.
static void run(long n, int inflight) {
  budget = n;
  answered = 0;
  for (int i = 0; i < n_downs; i++)
    for (int k = 0; k < inflight; k++) send_one(&downs[i]);
  while (answered < n) {
    int progress = 0;
    for (int i = 0; i < n_ups; i++) {
      struct up *u = &ups[i];
      pthread_mutex_lock(&mu);
      if (!u->ready) {
        u->ready = 1;
        pthread_mutex_unlock(&mu);
        on_ready(u->wrapper, u->conn_id);
        progress = 1;
        pthread_mutex_lock(&mu);
      }
      echo(u);
      pthread_mutex_unlock(&mu);
      if (u->out.n > 0) {
        uint64_t slice[2] = {(uint64_t)(uintptr_t)u->out.p, u->out.n};
        on_up_data(u->wrapper, u->out.n, (uint64_t)(uintptr_t)slice, 1, 0);
        progress = 1;
      }
    }
    for (int i = 0; i < n_downs; i++) {
      progress |= deliver(&downs[i]);
      int owed = downs[i].owed;
      downs[i].owed = 0;
      for (int k = 0; k < owed; k++) send_one(&downs[i]);
      progress |= owed > 0;
    }
    if (bad) fail("bad responses", bad);
    if (!progress) fail("stuck: answered", answered);
  }
}

int main(int argc, char **argv) {
  if (argc != 10) { fprintf(stderr, "usage: harness LIB CONFIG.any PROTO REQUESTS RESPONSE CONNS INFLIGHT WARMUP N\n"); return 2; }
  thrift = strcmp(argv[3], "thrift") == 0;
  int conns = atoi(argv[6]), inflight = atoi(argv[7]);
  long warmup = atol(argv[8]), n = atol(argv[9]);
  if (conns < 1 || conns > MAX_CONNS || inflight < 1 || inflight > MAX_INFLIGHT) fail("conns or inflight out of range", 0);

  size_t rl;
  unsigned char *reqs = (unsigned char *)slurp(argv[4], &rl);
  for (size_t off = 0, l; off < rl; off += l) {
    if (!(l = frame_len(reqs + off, rl - off))) fail("REQUESTS: a partial frame at", off);
    kinds = realloc(kinds, (n_kinds + 1) * sizeof *kinds);
    kind_len = realloc(kind_len, (n_kinds + 1) * sizeof *kind_len);
    kinds[n_kinds] = reqs + off;
    kind_len[n_kinds++] = l;
  }
  size_t tl;
  unsigned char *t = (unsigned char *)slurp(argv[5], &tl);
  append(&resp, t, tl);
  resp_id = id_at(resp.p, &resp_w);

  void *lib = dlopen(argv[1], RTLD_LAZY);
  if (!lib) { printf("error dlopen: %s\n", dlerror()); return 2; }
  config_fn on_config = sym(lib, "envoyGoFilterOnNetworkFilterConfig");
  conn_fn on_conn = sym(lib, "envoyGoFilterOnDownstreamConnection");
  on_data = sym(lib, "envoyGoFilterOnDownstreamData");
  event_fn on_event = sym(lib, "envoyGoFilterOnDownstreamEvent");
  on_ready = sym(lib, "envoyGoFilterOnUpstreamConnectionReady");
  on_up_data = sym(lib, "envoyGoFilterOnUpstreamData");
  on_write = sym(lib, "envoyGoFilterOnDownstreamWrite");
  allocs_fn allocs = dlsym(lib, "breezeHarnessAllocs");

  static const char lib_id[] = "breeze", plugin[] = "breeze";
  size_t cl;
  char *cfg = slurp(argv[2], &cl);
  uint64_t id = on_config((uint64_t)(uintptr_t)lib_id, sizeof(lib_id) - 1, (uint64_t)(uintptr_t)cfg, cl);
  for (int i = 0; i < conns; i++) {
    struct down *d = &downs[n_downs++];
    d->wrapper = malloc(64);
    d->next_id = 1;
    d->kind = i % n_kinds;
    if (on_conn(d->wrapper, (uint64_t)(uintptr_t)plugin, sizeof(plugin) - 1, id) != 0) fail("OnNewConnection stopped connection", i);
  }
  run(warmup, inflight);
  double a0 = allocs ? (double)allocs() : -1, c0 = cpu_ns(), w0 = now_ns();
  run(n, inflight);
  double c1 = cpu_ns(), w1 = now_ns(), a1 = allocs ? (double)allocs() : -1;
  printf("result proto=%s conns=%d inflight=%d requests=%ld upstream_requests=%ld upstream_conns=%d cpu_ns_per_req=%.0f wall_ns_per_req=%.0f go_allocs_per_req=%.2f\n",
         argv[3], conns, inflight, n, requests_upstream, n_ups, (c1 - c0) / n, (w1 - w0) / n, allocs ? (a1 - a0) / n : -1.0);
  finished = 1;
  for (int i = 0; i < n_downs; i++) on_event(downs[i].wrapper, 0 /* RemoteClose */);
  printf("done\n");
  return 0;
}

// fakeenvoy loads breeze.so the way Envoy does (dlopen, RTLD_LAZY) and
// drives one downstream connection through the library's real exported
// entry points, implementing the C API the library calls back into. It
// prints what the plugin does, one line per call:
//   config <id> | conn <status> | write <hex> | close <type> | finalize |
//   log <level> <line>
// Usage: fakeenvoy breeze.so CONFIG.any FRAME... (each FRAME a file of bytes
// delivered in its own OnDownstreamData call).
// FAKEENVOY_CONNS=N drives N connections one after another, each with its
// own wrapper and filter state: key "peer" holds "spiffe://fake/conn-<i>"
// (what set_filter_state would have stored), and SetFilterState adds keys.
#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { const char *p; ptrdiff_t n; } GoString;

// --- the C API Envoy offers Go network filters (api.h), exported from this
// executable with -rdynamic so the plugin's unresolved symbols bind to it.
int envoyGoFilterDownstreamWrite(void *f, void *buf, int len, int end_stream) {
  printf("write ");
  for (int i = 0; i < len; i++) printf("%02x", ((unsigned char *)buf)[i]);
  printf("\n");
  fflush(stdout);
  return 0;
}
int envoyGoFilterDownstreamClose(void *f, int close_type) {
  printf("close %d\n", close_type);
  fflush(stdout);
  return 0;
}
void envoyGoFilterDownstreamFinalize(void *f, int reason) { printf("finalize\n"); fflush(stdout); }
static const char addr[] = "127.0.0.1:12345";
int envoyGoFilterDownstreamInfo(void *f, int t, void *ret) {
  GoString *s = ret;
  s->p = addr;
  s->n = sizeof(addr) - 1;
  return 0;
}
// Upstream connections are not exercised here (the host in host/ covers
// them over real sockets); fail loudly if the plugin asks.
void *envoyGoFilterUpstreamConnect(void *lib, void *a, uint64_t id) { printf("unexpected upstream connect\n"); exit(3); }
int envoyGoFilterUpstreamConnEnableHalfClose(void *u, int e) { return 0; }
int envoyGoFilterUpstreamWrite(void *u, void *b, int l, int e) { return 0; }
int envoyGoFilterUpstreamClose(void *u, int t) { return 0; }
void envoyGoFilterUpstreamFinalize(void *u, int r) {}
int envoyGoFilterUpstreamInfo(void *u, int t, void *ret) { return 0; }
// The connection's filter state, as Envoy's Filter::getFilterState answers
// on the worker thread: the value points into memory of the wrapper's (Envoy:
// FilterWrapper::str_value_), which the Go side copies at once. A wrapper
// that is not a live connection's is a bug in the caller: exit 4.
#define MAX_CONNS 1024
#define MAX_KEYS 8
typedef struct { char key[64], value[256]; } kv;
static struct conn { void *wrapper; kv state[MAX_KEYS]; int nstate; char str_value[256]; } conns[MAX_CONNS];
static int nconns;
static struct conn *conn_of(void *w) {
  for (int i = 0; i < nconns; i++)
    if (conns[i].wrapper == w) return &conns[i];
  printf("filter state call with an unknown wrapper %p\n", w);
  exit(4);
}
static kv *find(struct conn *c, const GoString *k) {
  for (int i = 0; i < c->nstate; i++)
    if ((ptrdiff_t)strlen(c->state[i].key) == k->n && memcmp(c->state[i].key, k->p, k->n) == 0) return &c->state[i];
  return NULL;
}
int envoyGoFilterGetFilterState(void *w, void *k, void *v) {
  struct conn *c = conn_of(w);
  kv *e = find(c, k);
  if (e) {
    strcpy(c->str_value, e->value);
    ((GoString *)v)->p = c->str_value;
    ((GoString *)v)->n = strlen(c->str_value);
  }
  return 0; // CAPIOK
}
int envoyGoFilterSetFilterState(void *w, void *k, void *v, int a, int b, int c_) {
  struct conn *c = conn_of(w);
  const GoString *key = k, *value = v;
  kv *e = find(c, key);
  if (!e) {
    if (c->nstate == MAX_KEYS || key->n >= 64) { printf("filter state full\n"); exit(4); }
    e = &c->state[c->nstate++];
    memcpy(e->key, key->p, key->n);
    e->key[key->n] = 0;
  }
  ptrdiff_t n = value->n < 255 ? value->n : 255;
  memcpy(e->value, value->p, n);
  e->value[n] = 0;
  return 0;
}
// Envoy's log (contrib/golang/common/log/cgo.cc), at the level
// FAKEENVOY_LOG_LEVEL (spdlog's numbers: 0 trace ... 4 error, 6 off;
// default 2, info).
void envoyGoFilterLog(uint32_t level, void *data, int len) {
  printf("log %u %.*s\n", level, len, (const char *)data);
  fflush(stdout);
}
uint32_t envoyGoFilterLogLevel(void) {
  const char *l = getenv("FAKEENVOY_LOG_LEVEL");
  return l ? (uint32_t)atoi(l) : 2;
}

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

typedef uint64_t (*config_fn)(uint64_t, uint64_t, uint64_t, uint64_t);
typedef uint64_t (*conn_fn)(void *, uint64_t, uint64_t, uint64_t);
typedef uint64_t (*data_fn)(void *, uint64_t, uint64_t, int, int);
typedef void (*event_fn)(void *, int);

static void *sym(void *lib, const char *name) {
  void *s = dlsym(lib, name);
  if (!s) { printf("missing symbol %s\n", name); exit(2); }
  return s;
}

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: fakeenvoy breeze.so CONFIG.any FRAME...\n"); return 2; }
  void *lib = dlopen(argv[1], RTLD_LAZY);
  if (!lib) { printf("dlopen: %s\n", dlerror()); return 2; }
  config_fn on_config = sym(lib, "envoyGoFilterOnNetworkFilterConfig");
  conn_fn on_conn = sym(lib, "envoyGoFilterOnDownstreamConnection");
  data_fn on_data = sym(lib, "envoyGoFilterOnDownstreamData");
  event_fn on_event = sym(lib, "envoyGoFilterOnDownstreamEvent");

  static const char lib_id[] = "breeze", plugin[] = "breeze";
  size_t cfg_len;
  char *cfg = slurp(argv[2], &cfg_len);
  uint64_t id = on_config((uint64_t)(uintptr_t)lib_id, sizeof(lib_id) - 1, (uint64_t)(uintptr_t)cfg, cfg_len);
  printf("config %llu\n", (unsigned long long)id);

  const char *nc = getenv("FAKEENVOY_CONNS");
  int n_conns = nc ? atoi(nc) : 1;
  if (n_conns < 1 || n_conns > MAX_CONNS) { printf("FAKEENVOY_CONNS: 1 to %d\n", MAX_CONNS); return 2; }
  for (int c = 0; c < n_conns; c++) {
    void *wrapper = malloc(64); // stands for Envoy's per-connection filter object
    struct conn *fc = &conns[nconns++];
    fc->wrapper = wrapper;
    strcpy(fc->state[0].key, "peer");
    snprintf(fc->state[0].value, sizeof fc->state[0].value, "spiffe://fake/conn-%d", c);
    fc->nstate = 1;
    uint64_t st = on_conn(wrapper, (uint64_t)(uintptr_t)plugin, sizeof(plugin) - 1, id);
    printf("conn %llu\n", (unsigned long long)st);
    fflush(stdout);

    for (int i = 3; i < argc; i++) {
      size_t n;
      char *frame = slurp(argv[i], &n);
      uint64_t slice[2] = {(uint64_t)(uintptr_t)frame, n};
      on_data(wrapper, n, (uint64_t)(uintptr_t)slice, 1, 0);
    }
    on_event(wrapper, 0 /* RemoteClose */);
  }
  printf("done\n");
  return 0;
}

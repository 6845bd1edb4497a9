// cxxhalf prices the C++ half of Envoy's Go network filter (1.36): the work
// Envoy does per routed request for a Go filter that tcp_proxy does not do,
// and that the in-Envoy harness (harness.c) does not run. Counted from
// contrib/golang/filters/network/source/{golang,upstream,cgo}.cc and
// source/common/event/dispatcher_impl.cc, per request (one request per read):
//
//   - 3 slice arrays: onData (downstream), onData (upstream) and onWrite (the
//     response on its way out) each getRawSlices() and new[]/delete[] an
//     array of {ptr,len} pairs for the call into Go;
//   - 2 writes from Go (the request upstream, the response downstream), each
//     std::make_unique<Buffer::OwnedImpl>(ptr, len): a copy of the bytes into
//     a new buffer (Envoy's slices are at least 4 KiB: Slice::create rounds
//     up to a page), then dispatcher->post() of a closure holding a
//     weak_ptr, the flag and the buffer: under the dispatcher's post lock onto
//     a std::list, waking the worker (libevent event_active: a write to its
//     notification fd) when the list was empty; the worker later swaps the
//     list out under the lock, locks the weak_ptr and moves the buffer into
//     the connection's write buffer (that move, and the socket write, are what
//     tcp_proxy does too, so they are not counted here), then frees the
//     closure and the buffer.
//
// The same operations are made here with the C++ standard library on two
// threads standing for two workers (Breeze's upstream connection lives on
// another worker than the downstream one): thread A plays the downstream
// worker (onData, the request's post, the response's write and onWrite),
// thread B the upstream one. It is a model of Envoy's structures, not
// Envoy's code: OwnedImpl's slice deque, libevent's active queue and Envoy's
// allocator (tcmalloc) are replaced by their plainest std/glibc equivalents.
//
// IN_FLIGHT requests are kept going (closed loop, as make bench's load):
// the wake-up cost depends on it. With 1, every post finds the other
// worker's list empty and wakes it (an idle worker: the upper bound); with
// many, posts find lists already scheduled and share a wake-up (a loaded
// worker). wakeups_per_req says which.
//
// usage: cxxhalf IN_FLIGHT REQUEST_BYTES RESPONSE_BYTES REQUESTS
// prints: result inflight=W requests=N cpu_ns_per_req=X wakeups_per_req=K
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

// Buffer stands for Buffer::OwnedImpl made from Go's bytes: a heap object
// owning page-rounded slices holding a copy.
struct Buffer {
  struct Slice {
    std::unique_ptr<uint8_t[]> mem;
    size_t len;
  };
  std::deque<Slice> slices;
  Buffer(const char* data, size_t len) {
    size_t cap = (len + 4095) & ~size_t(4095);
    Slice s{std::unique_ptr<uint8_t[]>(new uint8_t[cap]), len};
    memcpy(s.mem.get(), data, len);
    slices.push_back(std::move(s));
  }
};

struct Filter {
  uint64_t written = 0;
  // write stands for filter->write(buf): Envoy moves the slices into the
  // connection's write buffer, as tcp_proxy's writes do: not counted.
  void write(Buffer& b, bool) {
    for (auto& s : b.slices) written += s.len;
  }
};

// Dispatcher: DispatcherImpl::post and runPostCallbacks.
class Dispatcher {
 public:
  Dispatcher() : fd_(eventfd(0, 0)) {}
  ~Dispatcher() { close(fd_); }
  void post(std::function<void()> cb) {
    bool do_post;
    {
      std::lock_guard<std::mutex> lock(mu_);
      do_post = callbacks_.empty();
      callbacks_.push_back(std::move(cb));
    }
    if (do_post) {
      uint64_t one = 1;
      if (write(fd_, &one, sizeof one) != sizeof one) abort();
      wakeups.fetch_add(1, std::memory_order_relaxed);
    }
  }
  // runOnce waits for a wake-up, then runs every callback posted.
  void runOnce() {
    uint64_t n;
    if (read(fd_, &n, sizeof n) != sizeof n) abort();
    std::list<std::function<void()>> cbs;
    {
      std::lock_guard<std::mutex> lock(mu_);
      cbs.swap(callbacks_);
    }
    for (auto& cb : cbs) cb();
  }
  std::atomic<uint64_t> wakeups{0};

 private:
  int fd_;
  std::mutex mu_;
  std::list<std::function<void()>> callbacks_;
};

// sliceArray: what golang.cc/upstream.cc do around each call into Go.
uint64_t sliceArray(Buffer& data) {
  std::vector<std::pair<const uint8_t*, size_t>> raw;  // getRawSlices (absl::InlinedVector in Envoy: no heap)
  raw.reserve(1);
  for (auto& s : data.slices) raw.emplace_back(s.mem.get(), s.len);
  int n = static_cast<int>(raw.size());
  unsigned long long* slices = new unsigned long long[2 * n];
  for (int i = 0; i < n; i++) {
    slices[2 * i] = reinterpret_cast<unsigned long long>(raw[i].first);
    slices[2 * i + 1] = raw[i].second;
  }
  // The call into Go would read slices here.
  asm volatile("" : : "r"(slices) : "memory");
  uint64_t sum = slices[1];
  delete[] slices;
  return sum;
}

// goWrite: envoyGoFilterDownstreamWrite / envoyGoFilterUpstreamWrite.
void goWrite(Dispatcher& d, std::weak_ptr<Filter> weak, const std::string& bytes,
             std::function<void(Buffer&)> after) {
  auto buffer = std::make_unique<Buffer>(bytes.data(), bytes.size());
  d.post([weak, end_stream = false, raw = buffer.release(), after] {
    std::unique_ptr<Buffer> buf(raw);
    if (auto f = weak.lock()) {
      f->write(*buf, end_stream);
      if (after) after(*buf);
    }
  });
}

double cpuNs() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e9 + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e3;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s IN_FLIGHT REQUEST_BYTES RESPONSE_BYTES REQUESTS\n", argv[0]);
    return 2;
  }
  long inflight = atol(argv[1]);
  std::string request(atoi(argv[2]), 'q'), response(atoi(argv[3]), 'r');
  long n = atol(argv[4]);
  if (inflight < 1 || n < inflight) {
    fprintf(stderr, "want 1 <= IN_FLIGHT <= REQUESTS\n");
    return 2;
  }

  Dispatcher da, db;  // the downstream and upstream workers' dispatchers
  auto down = std::make_shared<Filter>(), up = std::make_shared<Filter>();
  std::weak_ptr<Filter> downWeak = down, upWeak = up;
  long sent = 0, answered = 0;  // thread A's only
  std::atomic<bool> stop{false}, finished{false};
  std::mutex mu;
  std::condition_variable cv;

  // issue, on thread A: a request arrives from the downstream (onData's
  // slice array over what Envoy read) and Go writes it upstream (a copy and
  // a post to B).
  std::function<void(Buffer&)> onResponseWritten;
  std::function<void(Buffer&)> onRequestWritten = [&](Buffer&) {
    // On B: the upstream's answer, as Envoy read it, goes to Go (onData's
    // slice array), which writes the response downstream (a copy and a
    // post to A).
    Buffer reply(response.data(), response.size());
    sliceArray(reply);
    goWrite(da, downWeak, response, onResponseWritten);
  };
  auto issue = [&] {
    Buffer in(request.data(), request.size());
    sliceArray(in);
    goWrite(db, upWeak, request, onRequestWritten);
    sent++;
  };
  onResponseWritten = [&](Buffer& buf) {
    // On A: the response written runs through the Go filter's onWrite
    // (the third slice array); the connection then reads the next request.
    sliceArray(buf);
    if (++answered == n) {
      std::lock_guard<std::mutex> lock(mu);
      finished = true;
      cv.notify_all();
      return;
    }
    if (sent < n) issue();
  };

  std::thread b([&] {
    while (!stop.load()) db.runOnce();
  });
  std::thread a([&] {
    while (!stop.load()) da.runOnce();
  });

  double t0 = cpuNs();
  uint64_t w0 = da.wakeups.load() + db.wakeups.load();
  // The first IN_FLIGHT requests, read by A in one turn of its loop.
  da.post([&] {
    for (long i = 0; i < inflight; i++) issue();
  });
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return finished.load(); });
  }
  double t1 = cpuNs();
  uint64_t w1 = da.wakeups.load() + db.wakeups.load();
  stop.store(true);
  // Wake both loops so that they see stop.
  da.post([] {});
  db.post([] {});
  a.join();
  b.join();
  if (up->written != uint64_t(n) * request.size() || down->written != uint64_t(n) * response.size()) {
    fprintf(stderr, "wrote %llu and %llu bytes, want %llu and %llu\n", (unsigned long long)up->written,
            (unsigned long long)down->written, (unsigned long long)(n * request.size()),
            (unsigned long long)(n * response.size()));
    return 1;
  }
  // The two Buffers standing for what Envoy read (in, reply) are made and
  // freed by Envoy and tcp_proxy alike; the model counts them anyway, so its
  // figure is slightly high (two page allocations per request).
  printf("result inflight=%ld requests=%ld cpu_ns_per_req=%.0f wakeups_per_req=%.2f\n", inflight, n, (t1 - t0) / n,
         double(w1 - w0) / n);
  printf("done\n");
  return 0;
}

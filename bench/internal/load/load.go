// Package load is the load generator behind breeze-load: many connections,
// a fixed number of requests in flight on each, valid frames built once,
// latency in an HDR histogram, and the CPU time of the process under test
// read from /proc.
package load

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/breeze-mesh/breeze/bench/internal/proc"
	"github.com/breeze-mesh/breeze/bench/internal/wire"
)

// Config is one load run.
type Config struct {
	Label    string
	Addr     string
	Proto    wire.Protocol
	Mix      string // wire.MixRoutes or wire.MixSingle
	Payload  int    // bytes of call argument
	Conns    int
	InFlight int // requests in flight per connection (1 to 65535)
	// Duration of the measured window, after Warmup. Zero: count mode.
	Duration time.Duration
	// Requests in total (warm-up included) in count mode.
	Requests int64
	// Warmup is sent but neither timed nor counted.
	Warmup time.Duration
	// Rate caps the requests sent per second over all connections; 0: as
	// fast as responses come back (closed loop). Latency is measured from
	// the actual send, so a paced run does not correct coordinated omission.
	Rate float64
	// PID is the process whose CPU time per request is reported (0: none).
	PID int
	// Drain bounds the wait for responses still in flight at the end (default 5s).
	Drain time.Duration
	// Grace bounds how long the end may take after the measured duration
	// (or a cancel): past it, Run gives up with an error saying what it
	// still waited for, so that one stuck run cannot hang the whole bench
	// (default Drain + 5s: readers may rightly wait Drain for lost replies).
	Grace time.Duration
	// DialTimeout bounds each connect (default 5s).
	DialTimeout time.Duration
	// Verify checks the length of every successful response against the
	// echo server's (true when the peer is breeze-echo, directly or through proxies).
	Verify bool

	clock clock // nil: the real one; tests set theirs
}

// Result is what a run measured. Latencies are in microseconds.
type Result struct {
	Label     string `json:"label,omitempty"`
	Proto     string `json:"proto"`
	Mix       string `json:"mix"`
	Conns     int    `json:"conns"`
	ConnsOpen int    `json:"conns_open"`
	InFlight  int    `json:"in_flight"`
	Payload   int    `json:"payload"`
	// Rate is the configured pace (requests/s over all connections); 0:
	// closed loop.
	Rate       float64          `json:"rate,omitempty"`
	Seconds    float64          `json:"seconds"`
	Responses  int64            `json:"responses"` // in the measured window, errors included
	OK         int64            `json:"ok"`
	Errors     int64            `json:"errors"` // whole run, warm-up included
	ErrorKinds map[string]int64 `json:"error_kinds,omitempty"`
	RPS        float64          `json:"rps"`
	P50        float64          `json:"p50_us"`
	P90        float64          `json:"p90_us"`
	P99        float64          `json:"p99_us"`
	P999       float64          `json:"p999_us"`
	Max        float64          `json:"max_us"`
	PID        int              `json:"pid,omitempty"`
	// ProxyCPU is the CPU seconds process PID used in the measured window;
	// CPUPer1k the same per 1,000 responses. Both -1 without a PID.
	ProxyCPU float64 `json:"proxy_cpu_s"`
	CPUPer1k float64 `json:"cpu_s_per_1k"`
	// ReadsPerReq and WritesPerReq are the read and write system calls
	// (read/readv, write/writev) process PID made in the window per
	// response; -1 without a PID.
	ReadsPerReq  float64 `json:"reads_per_req"`
	WritesPerReq float64 `json:"writes_per_req"`
	// ProxyRSS is the resident memory of PID at the end, in bytes.
	ProxyRSS int64 `json:"proxy_rss_bytes,omitempty"`
	// LoadCPU is the CPU seconds this load generator used in the window.
	LoadCPU float64 `json:"load_cpu_s"`
}

const (
	phaseWarmup = iota
	phaseMeasure
	phaseDone
)

type runner struct {
	cfg    Config
	clock  clock
	conns  []*conn
	reqs   []wire.Request
	idMask uint64 // request ids are ANDed with it (Thrift's seqids are 32-bit)
	start  time.Time
	phase  atomic.Int32
	stop   chan struct{}
	budget atomic.Int64 // count mode: requests left to send

	shards []shard
	// pace: nanoseconds between two sends of one connection (rate mode).
	pace int64
}

type shard struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
}

const maxLatency = int64(60 * time.Second)

func newHistogram() *hdrhistogram.Histogram { return hdrhistogram.New(1, maxLatency, 3) }

type conn struct {
	r   *runner
	idx int
	nc  net.Conn

	slots       chan uint16
	ids         []atomic.Uint64
	sent        []atomic.Int64 // ns since runner start
	kind        []atomic.Int32
	seq         uint64
	outstanding atomic.Int64
	writerDone  atomic.Bool
	dead        chan struct{} // closed when the reader ends

	// Owned by the reader until the run ends.
	responses, ok int64
	lat           []int64

	errMu sync.Mutex
	errs  map[string]int64
}

func (c *conn) fail(kind string, n int64) {
	c.errMu.Lock()
	c.errs[kind] += n
	c.errMu.Unlock()
}

// Run runs the load and returns what it measured.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	r, err := newRunner(cfg)
	if err != nil {
		return nil, err
	}
	return r.run(ctx)
}

func newRunner(cfg Config) (*runner, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	reqs, err := cfg.Proto.Requests(cfg.Mix, cfg.Payload)
	if err != nil {
		return nil, err
	}
	r := &runner{cfg: cfg, clock: cfg.clock, reqs: reqs, idMask: wire.IDMask(cfg.Proto), stop: make(chan struct{}), shards: make([]shard, 8)}
	if r.clock == nil {
		r.clock = realClock{}
	}
	for i := range r.shards {
		r.shards[i].h = newHistogram()
	}
	if cfg.Rate > 0 {
		r.pace = int64(float64(time.Second) * float64(cfg.Conns) / cfg.Rate)
	}
	r.budget.Store(cfg.Requests)
	return r, nil
}

func (r *runner) newConn(idx int, nc net.Conn) *conn {
	n := r.cfg.InFlight
	c := &conn{
		r: r, idx: idx, nc: nc,
		slots: make(chan uint16, n),
		ids:   make([]atomic.Uint64, n),
		sent:  make([]atomic.Int64, n),
		kind:  make([]atomic.Int32, n),
		dead:  make(chan struct{}),
		errs:  map[string]int64{},
		lat:   make([]int64, 0, 256),
	}
	for s := range n {
		c.slots <- uint16(s)
	}
	return c
}

func (r *runner) run(ctx context.Context) (*Result, error) {
	cfg := r.cfg
	conns, dialErrs := dialAll(ctx, cfg.Addr, cfg.Conns, cfg.DialTimeout)
	if len(conns) == 0 {
		return nil, fmt.Errorf("no connection to %s: %v", cfg.Addr, dialErrs)
	}
	cs := make([]*conn, len(conns))
	for i, nc := range conns {
		cs[i] = r.newConn(i, nc)
	}
	r.conns = cs

	r.start = r.clock.Now()
	var cpu0, cpu1, self0, self1 time.Duration
	var io0, io1 proc.IO
	var t0, t1 time.Time
	beginMeasure := func() {
		t0 = r.clock.Now()
		io0 = ioOf(cfg.PID)
		cpu0 = cpuOf(cfg.PID)
		self0 = cpuOf(os.Getpid())
		r.phase.Store(phaseMeasure)
	}
	if cfg.Warmup == 0 {
		beginMeasure()
	}
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Add(2)
		go func() { defer wg.Done(); c.writeLoop() }()
		go func() { defer wg.Done(); c.readLoop() }()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	endMeasure := func() {
		if r.phase.Load() != phaseMeasure {
			beginMeasure() // a run shorter than its warm-up still measures something
		}
		r.phase.Store(phaseDone)
		t1 = r.clock.Now()
		cpu1 = cpuOf(cfg.PID)
		io1 = ioOf(cfg.PID)
		self1 = cpuOf(os.Getpid())
	}
	// One timer, for the warm-up, then the measured duration, then the
	// grace after it.
	phaseTimer := r.clock.NewTimer()
	defer phaseTimer.Stop()
	var warm, end, grace <-chan time.Time
	if cfg.Warmup > 0 {
		phaseTimer.Reset(cfg.Warmup)
		warm = phaseTimer.C()
	} else if cfg.Duration > 0 {
		phaseTimer.Reset(cfg.Duration)
		end = phaseTimer.C()
	}
	ctxDone := ctx.Done()
	stopAll := func() {
		if grace == nil {
			close(r.stop)
			phaseTimer.Reset(cfg.Grace)
			warm, end, grace = nil, nil, phaseTimer.C()
		}
	}
wait:
	for {
		select {
		case <-warm:
			warm = nil
			beginMeasure()
			if cfg.Duration > 0 {
				phaseTimer.Reset(cfg.Duration)
				end = phaseTimer.C()
			}
		case <-end:
			end = nil
			endMeasure()
			stopAll()
		case <-ctxDone:
			ctxDone = nil
			if r.phase.Load() != phaseDone {
				endMeasure()
			}
			stopAll()
		case <-grace:
			err := r.stuck()
			for _, c := range cs {
				c.nc.Close() // ends the goroutines still reading or writing
			}
			return nil, err
		case <-done:
			if r.phase.Load() != phaseDone {
				endMeasure()
			}
			break wait
		}
	}
	for _, c := range cs {
		c.nc.Close()
	}

	res := &Result{
		Label: cfg.Label, Proto: cfg.Proto.Name(), Mix: cfg.Mix, Conns: cfg.Conns, ConnsOpen: len(cs),
		InFlight: cfg.InFlight, Payload: cfg.Payload, Rate: cfg.Rate, Seconds: t1.Sub(t0).Seconds(),
		ErrorKinds: map[string]int64{}, PID: cfg.PID, ProxyCPU: -1, CPUPer1k: -1, ReadsPerReq: -1, WritesPerReq: -1,
		LoadCPU: (self1 - self0).Seconds(),
	}
	if n := len(dialErrs); n > 0 {
		res.ErrorKinds["dial"] = int64(n)
	}
	h := newHistogram()
	for i := range r.shards {
		h.Merge(r.shards[i].h)
	}
	for _, c := range cs {
		res.Responses += c.responses
		res.OK += c.ok
		for k, v := range c.errs {
			res.ErrorKinds[k] += v
		}
	}
	for _, v := range res.ErrorKinds {
		res.Errors += v
	}
	if res.Seconds > 0 {
		res.RPS = float64(res.Responses) / res.Seconds
	}
	us := func(q float64) float64 { return float64(h.ValueAtQuantile(q)) / 1e3 }
	res.P50, res.P90, res.P99, res.P999 = us(50), us(90), us(99), us(99.9)
	res.Max = float64(h.Max()) / 1e3
	if cfg.PID > 0 {
		res.ProxyCPU = (cpu1 - cpu0).Seconds()
		if res.Responses > 0 {
			res.CPUPer1k = res.ProxyCPU / float64(res.Responses) * 1000
			if io1.SyscR > 0 {
				res.ReadsPerReq = float64(io1.SyscR-io0.SyscR) / float64(res.Responses)
				res.WritesPerReq = float64(io1.SyscW-io0.SyscW) / float64(res.Responses)
			}
		}
		res.ProxyRSS, _ = proc.RSS(cfg.PID)
	}
	return res, nil
}

func cpuOf(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	d, _ := proc.CPU(pid)
	return d
}

func ioOf(pid int) proc.IO {
	if pid <= 0 {
		return proc.IO{}
	}
	io, _ := proc.ReadIO(pid)
	return io
}

func (cfg *Config) check() error {
	switch {
	case cfg.Proto == nil:
		return errors.New("no protocol")
	case cfg.Conns < 1:
		return fmt.Errorf("connections %d: want at least 1", cfg.Conns)
	case cfg.InFlight < 1 || cfg.InFlight > 1<<16-1:
		return fmt.Errorf("in flight %d: want 1 to 65535", cfg.InFlight)
	case cfg.Duration <= 0 && cfg.Requests <= 0:
		return errors.New("give a duration or a request count")
	case cfg.Duration > 0 && cfg.Requests > 0:
		return errors.New("give a duration or a request count, not both")
	case cfg.Rate < 0:
		return fmt.Errorf("rate %v: want 0 (unlimited) or more", cfg.Rate)
	}
	if cfg.Drain <= 0 {
		cfg.Drain = 5 * time.Second
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.Grace <= 0 {
		cfg.Grace = cfg.Drain + 5*time.Second
	}
	return nil
}

// stuck says what a run that outlived its grace still waits for.
func (r *runner) stuck() error {
	var inFlight int64
	var waiting, writers, readers int
	for _, c := range r.conns {
		if n := c.outstanding.Load(); n > 0 {
			inFlight += n
			waiting++
		}
		if !c.writerDone.Load() {
			writers++
		}
		select {
		case <-c.dead:
		default:
			readers++
		}
	}
	n := len(r.conns)
	return fmt.Errorf("%s (%s to %s): not ended %v after the end of the measured duration: %d requests in flight on %d of %d connections, %d of %d writers still sending, %d of %d readers still waiting",
		orDash(r.cfg.Label), r.cfg.Proto.Name(), r.cfg.Addr, r.cfg.Grace, inFlight, waiting, n, writers, n, readers, n)
}

// elapsed is the time since the run started, in nanoseconds.
func (r *runner) elapsed() int64 { return int64(r.clock.Now().Sub(r.start)) }

// ended reports whether the measured duration is over (or the run cancelled).
func (r *runner) ended() bool {
	select {
	case <-r.stop:
		return true
	default:
		return false
	}
}

// take reserves one request of the count-mode budget.
func (r *runner) take() bool {
	if r.cfg.Requests <= 0 {
		return true
	}
	return r.budget.Add(-1) >= 0
}

// writeLoop sends a request whenever a slot is free (and, paced, when its
// turn has come), batching the requests of the slots free at once.
//
// Paced, the inner loop may go on for as long as the peer answers within
// the pace: every wait for the next turn frees the slot of the request sent
// before it. So the end of the run is checked at every turn and the wait
// ends with it; otherwise a connection whose replies keep up never sees
// the end and the run never ends (it happened on a quiet machine).
func (c *conn) writeLoop() {
	r := c.r
	defer c.writerExit()
	var pacer timer
	if r.pace > 0 {
		pacer = r.clock.NewTimer()
		defer pacer.Stop()
	}
	buf := make([]byte, 0, 64<<10)
	// Connections start spread over one pacing interval.
	next := r.pace * int64(c.idx) / int64(max(1, r.cfg.Conns))
	// Checked first: a select between a free slot and the end picks either.
	for !r.ended() {
		var s uint16
		select {
		case s = <-c.slots:
		case <-r.stop:
			return
		case <-c.dead:
			return
		}
		buf = buf[:0]
		for {
			if !r.take() {
				c.write(buf)
				return
			}
			if r.pace > 0 {
				if d := time.Duration(next - r.elapsed()); d > 0 {
					if len(buf) > 0 { // do not hold earlier requests back
						if !c.write(buf) {
							return
						}
						buf = buf[:0]
					}
					if !c.waitTurn(pacer, d) {
						return // slot s holds no request
					}
				}
				next += r.pace
			}
			buf = c.appendRequest(buf, s)
			if len(buf) >= 64<<10 || r.ended() {
				break
			}
			select {
			case s = <-c.slots:
				continue
			default:
			}
			break
		}
		if !c.write(buf) {
			return
		}
	}
}

// waitTurn waits d for the pacer, unless the run ends or the connection
// fails first (false).
func (c *conn) waitTurn(pacer timer, d time.Duration) bool {
	pacer.Reset(d)
	select {
	case <-pacer.C():
		return true
	case <-c.r.stop:
		return false
	case <-c.dead:
		return false
	}
}

func (c *conn) write(buf []byte) bool {
	if len(buf) == 0 {
		return true
	}
	if _, err := c.nc.Write(buf); err != nil {
		select {
		case <-c.dead: // the reader saw the failure first and counted it
		default:
			c.fail("write", 1)
		}
		return false
	}
	return true
}

func (c *conn) appendRequest(buf []byte, s uint16) []byte {
	r := c.r
	c.seq++
	id := (c.seq<<16 | uint64(s)) & r.idMask
	if id == 0 { // 0 marks a free slot: skip the id that wraps to it
		c.seq++
		id = (c.seq<<16 | uint64(s)) & r.idMask
	}
	k := (c.idx + int(c.seq)) % len(r.reqs)
	c.ids[s].Store(id)
	c.kind[s].Store(int32(k))
	c.sent[s].Store(r.elapsed())
	c.outstanding.Add(1)
	return r.cfg.Proto.AppendRequest(buf, &r.reqs[k], id)
}

// writerExit lets the reader end once the responses in flight are in (or
// after Drain).
func (c *conn) writerExit() {
	c.writerDone.Store(true)
	if c.outstanding.Load() == 0 {
		c.nc.SetReadDeadline(time.Now())
	} else {
		c.nc.SetReadDeadline(time.Now().Add(c.r.cfg.Drain))
	}
}

func (c *conn) readLoop() {
	r := c.r
	defer close(c.dead)
	defer c.flushLatencies()
	p := r.cfg.Proto
	maxFrame := 0
	for _, q := range r.reqs {
		maxFrame = max(maxFrame, q.ReplyLen)
	}
	br := bufio.NewReaderSize(c.nc, max(64<<10, maxFrame+1024))
	hl := p.HeaderLen()
	var big []byte
	for {
		if c.writerDone.Load() && c.outstanding.Load() == 0 {
			return
		}
		h, err := br.Peek(hl)
		if err != nil {
			c.readFailed(err)
			return
		}
		n, err := p.FrameLen(h)
		if err != nil {
			c.fail("bad_frame", 1)
			c.lost()
			return
		}
		var f []byte
		if n <= br.Size() {
			f, err = br.Peek(n)
		} else {
			big = append(big[:0], make([]byte, n)...)
			_, err = io.ReadFull(br, big)
			f = big
		}
		if err != nil {
			c.readFailed(err)
			return
		}
		c.handle(f)
		if n <= br.Size() {
			br.Discard(n)
		}
	}
}

func (c *conn) handle(f []byte) {
	r := c.r
	p := r.cfg.Proto
	resp, err := p.ParseResponse(f)
	if err != nil {
		c.fail("bad_frame", 1)
		return
	}
	switch resp.Kind {
	case wire.Ping:
		if reply, err := p.Echo(nil, f); err == nil && len(reply) > 0 {
			c.nc.Write(reply)
		}
		return
	case wire.Other:
		return
	}
	s := uint16(resp.ID)
	if int(s) >= len(c.ids) || c.ids[s].Load() != resp.ID {
		c.fail("unexpected_id", 1)
		return
	}
	c.ids[s].Store(0)
	lat := r.elapsed() - c.sent[s].Load()
	k := c.kind[s].Load()
	if r.phase.Load() == phaseMeasure {
		c.responses++
		c.lat = append(c.lat, lat)
		if len(c.lat) == cap(c.lat) {
			c.flushLatencies()
		}
	}
	switch {
	case resp.Kind != wire.OK:
		c.fail(resp.Status, 1)
	case r.cfg.Verify && len(f) != r.reqs[k].ReplyLen:
		c.fail("bad_length", 1)
	default:
		if r.phase.Load() == phaseMeasure {
			c.ok++
		}
	}
	c.outstanding.Add(-1)
	c.slots <- s
}

func (c *conn) flushLatencies() {
	if len(c.lat) == 0 {
		return
	}
	sh := &c.r.shards[c.idx%len(c.r.shards)]
	sh.mu.Lock()
	for _, v := range c.lat {
		sh.h.RecordValue(min(max(v, 1), maxLatency))
	}
	sh.mu.Unlock()
	c.lat = c.lat[:0]
}

func (c *conn) readFailed(err error) {
	if c.writerDone.Load() && c.outstanding.Load() == 0 {
		return // a clean end: the deadline only woke us up
	}
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		// Drain ran out: counted as lost below.
	case errors.Is(err, io.EOF):
		c.fail("conn_closed", 1)
	default:
		c.fail("conn_error", 1)
	}
	c.lost()
}

func (c *conn) lost() {
	if n := c.outstanding.Load(); n > 0 {
		c.fail("lost_response", n)
	}
}

// dialAll opens n connections, 64 at a time.
func dialAll(ctx context.Context, addr string, n int, timeout time.Duration) ([]net.Conn, []error) {
	var mu sync.Mutex
	var conns []net.Conn
	var errs []error
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	d := net.Dialer{Timeout: timeout}
	for range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			nc, err := d.DialContext(ctx, "tcp", addr)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			if tc, ok := nc.(*net.TCPConn); ok {
				tc.SetNoDelay(true)
			}
			conns = append(conns, nc)
		}()
	}
	wg.Wait()
	return conns, errs
}

// Format writes res for people.
func (res *Result) Format(w io.Writer) {
	pace := "closed loop"
	if res.Rate > 0 {
		pace = fmt.Sprintf("paced at %.0f req/s", res.Rate)
	}
	fmt.Fprintf(w, "%s %s: %d connections (%d open) x %d in flight, %d-byte payload, %s mix, %s\n",
		orDash(res.Label), res.Proto, res.Conns, res.ConnsOpen, res.InFlight, res.Payload, res.Mix, pace)
	fmt.Fprintf(w, "  %d responses in %.2fs: %.0f req/s; %d ok, %d errors\n", res.Responses, res.Seconds, res.RPS, res.OK, res.Errors)
	if len(res.ErrorKinds) > 0 {
		keys := slicesSorted(res.ErrorKinds)
		for _, k := range keys {
			fmt.Fprintf(w, "    %s: %d\n", k, res.ErrorKinds[k])
		}
	}
	fmt.Fprintf(w, "  latency us: p50 %.0f  p90 %.0f  p99 %.0f  p99.9 %.0f  max %.0f\n", res.P50, res.P90, res.P99, res.P999, res.Max)
	if res.PID > 0 {
		fmt.Fprintf(w, "  process %d: %.2f CPU s, %.4f CPU s per 1000 requests, %.2f reads + %.2f writes per request, RSS %.1f MiB\n",
			res.PID, res.ProxyCPU, res.CPUPer1k, res.ReadsPerReq, res.WritesPerReq, float64(res.ProxyRSS)/(1<<20))
	}
	fmt.Fprintf(w, "  load generator: %.2f CPU s\n", res.LoadCPU)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func slicesSorted(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range maps.Keys(m) {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

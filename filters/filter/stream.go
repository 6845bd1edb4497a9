package filter

import (
	"fmt"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/breeze-mesh/breeze/codecs"
)

// RouteEntry is what filters see of the route a request matched.
type RouteEntry interface {
	RouteName() string
	// FilterConfig is the named filter's per-route config (what its
	// Factory.ParseRoute made of Route.typed_per_filter_config), or nil.
	FilterConfig(filter string) any
}

// Outcome is how a request ended.
type Outcome struct {
	// Responded: an upstream response was relayed; Status is its status,
	// Code its status in the protocol's own numbers (codecs.Message.Code).
	Responded bool
	Status    codecs.ResponseStatus
	Code      uint32
	// Sent: a oneway request was written upstream.
	Sent bool
	// LocalReply is the kind of error the proxy answered with itself, 0
	// for none. A oneway request that could not be sent is dropped with
	// the kind it would have been answered with.
	LocalReply codecs.ErrorKind
	// Detail says why, for logs.
	Detail string
	Flags  Flag
}

// AttemptWatcher sees the upstream attempts of one request: the first,
// every retry and every re-balance after a connect failure. Attempts of a
// request never overlap: each StartAttempt is followed by one EndAttempt
// before the next StartAttempt, unless the request ends first (the client
// gone while an attempt is in flight): the watcher closes what is open in
// OnDone. Both run on whichever goroutine holds the request at the time
// and must not block.
type AttemptWatcher interface {
	// StartAttempt runs before the attempt is handed to the upstream
	// layer, with the connection's codec held: it may add Mutations to m,
	// the request as this attempt sends it. s.Upstream and
	// s.UpstreamLabels name the endpoint.
	StartAttempt(s *Stream, m *codecs.Message)
	// EndAttempt says how the attempt ended.
	EndAttempt(s *Stream, end AttemptEnd)
}

// ShadowWatcher is implemented by an AttemptWatcher that also sees the
// request's mirrored copies (route request_mirror_policies).
type ShadowWatcher interface {
	// StartShadow runs before a shadow copy m of the request is handed to
	// the upstream layer, towards endpoint (ip:port) of cluster, with the
	// connection's codec held; it may add Mutations to m. The request
	// itself may have ended by then. The function it returns (nil for
	// none) is called once, from any goroutine, with the shadow's outcome.
	StartShadow(m *codecs.Message, cluster, endpoint string) (end func(AttemptEnd))
}

// AttemptEnd is how one upstream attempt ended: a response, a oneway
// written, or a failure.
type AttemptEnd struct {
	// Response is the upstream's response, nil when none came. Valid
	// during EndAttempt only.
	Response *codecs.Message
	// Sent: a oneway was written upstream.
	Sent bool
	// Failure says why no response came, as a token ("timeout", "reset",
	// "goaway", "connect_failure", "overflow", "internal", "encode_error"),
	// with the flag the request would carry if it ended so.
	Failure string
	Flag    Flag
}

// ClientGone is the outcome of a request whose client's connection closed
// before it ended (DC).
var ClientGone = Outcome{Detail: "downstream connection closed", Flags: DownstreamConnectionTermination}

// Stream is one request on its way through the chain. The proxy makes one
// per request; filters read and change it only inside their callbacks,
// and must not keep it after OnDone.
type Stream struct {
	// Request is the decoded request with the client's own id. Its
	// Metadata belong to the stream (valid until OnDone). Filters append
	// to Mutations to have the codec write key/values into the request.
	Request codecs.Message
	// Response is the upstream's response, during OnResponse only.
	// Filters may append to its Mutations.
	Response *codecs.Message
	// Route is the route the request matched, nil when none did.
	Route RouteEntry
	// Cluster and Upstream name where the router sent the request (the
	// cluster, and the endpoint's ip:port of the last attempt).
	Cluster, Upstream string
	// UpstreamLabels are the labels of that endpoint (the cluster's
	// config, DNS or EDS): who served the request, for metrics. Shared:
	// read only.
	UpstreamLabels map[string]string
	// Attempts counts the endpoints the request was sent or re-balanced to.
	Attempts int
	// Start is when the request was decoded; UpstreamStart when it was
	// last handed to an upstream connection; End when it finished.
	Start, UpstreamStart, End time.Time
	// BytesIn is the request frame's size, BytesOut what the client got.
	BytesIn, BytesOut int
	// Outcome is set before OnDone.
	Outcome Outcome
	// Peer is the caller of the request's connection, shared by every
	// request of it: read only. The proxy fills it only for a chain with a
	// PeerReader; nil outside the proxy.
	Peer *Peer
	// AttemptWatcher, when a filter sets it in OnRequest (tracing, for a traced
	// request only), sees each upstream attempt the router makes. Nil
	// costs the router one comparison per attempt.
	AttemptWatcher AttemptWatcher

	conn  Conn
	chain *Chain
	// next is the index of the filter whose OnRequest runs next.
	next int
	// state is the pause handshake between the goroutine walking the
	// chain and whoever calls Resume or Reply (see run).
	state atomic.Int32
	done  atomic.Bool
	// reply is what Reply asked for, read by whoever walks the chain next.
	reply     codecs.ErrorKind
	replyWhy  string
	replyFlag Flag
	// flags are what AddFlags recorded, added to the outcome's.
	flags    Flag
	terminal any

	// Inline storage: requests with few keys need no allocation of their own.
	mdBuf  [16]codecs.KV
	mutBuf [4]codecs.KV
	rmBuf  [2]string
}

const (
	stRunning int32 = iota
	stPaused
	// stEarly: Resume or Reply came while a filter's OnRequest was running.
	stEarly
	stResumed
	stAborted
)

// Conn is the connection a stream belongs to, as the proxy implements it.
type Conn interface {
	// LocalReply writes the codec's own error reply to the request;
	// locked says whether the caller already holds the connection's codec.
	LocalReply(s *Stream, kind codecs.ErrorKind, detail string, locked bool)
	// Resume walks the rest of the chain of a paused stream later, on
	// another goroutine, holding the connection's codec (Stream.Continue).
	// If the connection has closed meanwhile it aborts the stream instead.
	Resume(s *Stream)
	// Write sends bytes to the client, from any goroutine.
	Write(b []byte)
	// Done is told once, after every OnDone ran.
	Done(s *Stream)
	// Panicked reports a panic recovered in a filter, for the proxy to log
	// and count.
	Panicked(s *Stream, where string, v any, stack []byte)
}

// Chain is the ordered filters of one proxy config, the terminal last.
type Chain struct {
	Filters []Filter
	Names   []string
}

// Init prepares s for a new request of conn decoded as m (whose metadata
// it copies). The caller then calls Run.
func (s *Stream) Init(c *Chain, conn Conn, m *codecs.Message, now time.Time) {
	s.chain, s.conn = c, conn
	s.Request = *m
	s.Request.Metadata = append(s.mdBuf[:0], m.Metadata...)
	s.Request.Mutations = append(s.mutBuf[:0], m.Mutations...)
	s.Request.Removals = append(s.rmBuf[:0], m.Removals...)
	s.Start = now
	s.BytesIn = len(m.Frame)
}

// Release drops what a finished stream refers to (the request's bytes
// and metadata, the response, the route, the peer, the watcher), for a
// proxy that keeps the stream to reuse it: kept, it pins none of them.
// It leaves the stream's atomic state alone, which the goroutine that
// walked the chain may still look at as it returns, and is no reset:
// a reused stream is zeroed whole by its owner before Init.
func (s *Stream) Release() {
	s.Request, s.Response, s.Route = codecs.Message{}, nil, nil
	s.Cluster, s.Upstream, s.UpstreamLabels = "", "", nil
	s.Peer, s.AttemptWatcher, s.conn, s.chain, s.terminal = nil, nil, nil, nil, nil
	s.replyWhy, s.Outcome.Detail = "", ""
	s.mdBuf, s.mutBuf, s.rmBuf = [16]codecs.KV{}, [4]codecs.KV{}, [2]string{}
}

// SetTerminal and Terminal keep the terminal filter's own per-request
// state, which the proxy allocates together with the stream.
func (s *Stream) SetTerminal(v any) { s.terminal = v }
func (s *Stream) Terminal() any     { return s.terminal }

// Answering is implemented by a terminal filter's per-request state
// (SetTerminal) that holds a share of something the client's next request
// may need, such as a cluster's circuit-breaker count. The stream calls it
// once, right before the answer is written: OnDone runs only after the
// write (and after every filter's OnDone), by which time the client may
// have read its answer and sent the next request, which must not find the
// answered one still counted.
type Answering interface{ Answering() }

func (s *Stream) answering() {
	if a, ok := s.terminal.(Answering); ok {
		a.Answering()
	}
}

// RouteConfig returns the named filter's per-route config of the matched
// route, or nil.
func (s *Stream) RouteConfig(filter string) any {
	if s.Route == nil {
		return nil
	}
	return s.Route.FilterConfig(filter)
}

// AddFlags records flags the outcome will carry however the request ends,
// for what a filter did to a request it let go on (DI: a delay was
// injected). Call it inside OnRequest only: a paused stream may be
// finished at any time by its client going away.
func (s *Stream) AddFlags(f Flag) { s.flags |= f }

// Done reports whether the stream has finished.
func (s *Stream) Done() bool { return s.done.Load() }

// Resume continues a stream that a filter paused, with the next filter.
// Call it once, from any goroutine (also from inside OnRequest, which then
// behaves as Continue); after the stream finished it does nothing.
func (s *Stream) Resume() { s.wake() }

// Reply answers the request with the codec's own error reply and ends it
// with the given flags. Inside OnRequest, call it and return Stop; for a
// paused stream, call it instead of Resume, from any goroutine.
func (s *Stream) Reply(kind codecs.ErrorKind, detail string, flags Flag) {
	s.reply, s.replyWhy, s.replyFlag = kind, detail, flags
	s.wake()
}

func (s *Stream) wake() {
	for {
		switch s.state.Load() {
		case stRunning:
			if s.state.CompareAndSwap(stRunning, stEarly) {
				return
			}
		case stPaused:
			if s.state.CompareAndSwap(stPaused, stResumed) {
				s.conn.Resume(s)
				return
			}
		default:
			return // already woken, or aborted
		}
	}
}

// Run walks the chain from the first filter. The caller holds the
// connection's codec.
func (s *Stream) Run() { s.next = 0; s.walk() }

// Continue walks the rest of the chain of a resumed stream; the proxy's
// Conn.Resume calls it holding the connection's codec.
func (s *Stream) Continue() {
	s.state.Store(stRunning)
	if !s.replyRequested() {
		s.walk()
	}
}

// replyRequested sends the reply Reply asked for, if it asked, and
// reports whether it did. The caller holds the connection's codec.
func (s *Stream) replyRequested() bool {
	if s.reply == 0 {
		return false
	}
	s.ReplyAndFinish(s.reply, s.replyWhy, s.replyFlag, true)
	return true
}

func (s *Stream) walk() {
	filters := s.chain.Filters
	for s.next < len(filters) {
		i := s.next
		s.next++
		st, ok := s.onRequest(i)
		if !ok {
			return // panicked: answered and finished
		}
		if s.state.CompareAndSwap(stEarly, stRunning) {
			if s.replyRequested() {
				return
			}
			continue // resumed before it even paused
		}
		switch st {
		case Continue:
		case Pause:
			// The message must outlive the read buffer it points into.
			s.Request.Frame = append([]byte(nil), s.Request.Frame...)
			if s.state.CompareAndSwap(stRunning, stPaused) {
				return
			}
			// Woken between OnRequest's return and here.
			s.state.Store(stRunning)
			if s.replyRequested() {
				return
			}
		default: // Stop
			if i < len(filters)-1 && !s.done.Load() {
				s.ReplyAndFinish(codecs.ErrInternal,
					fmt.Sprintf("breeze: filter %q stopped the request without answering it", s.chain.Names[i]), InternalError, true)
			}
			return
		}
	}
}

func (s *Stream) onRequest(i int) (st Status, ok bool) {
	defer func() {
		if r := recover(); r != nil {
			// Reported before the stream finishes: a proxy may reuse a
			// finished stream, and learns here that this one's connection
			// is failing.
			name := s.chain.Names[i]
			s.conn.Panicked(s, "filter "+name+" OnRequest", r, debug.Stack())
			s.ReplyAndFinish(codecs.ErrInternal, "breeze: internal error in filter "+name, InternalError, true)
			ok = false
		}
	}()
	return s.chain.Filters[i].OnRequest(s), true
}

// Abort ends a paused stream because its connection went away (DC). It
// reports false when the stream is not paused: whoever holds it then
// finishes it.
func (s *Stream) Abort() bool {
	if s.state.CompareAndSwap(stPaused, stAborted) {
		s.Finish(ClientGone)
		return true
	}
	return false
}

// Fail ends the stream with the protocol's internal-error reply (IE)
// because its connection failed (a recovered panic), whoever holds it: a
// paused stream is aborted, so that its filter's Resume or Reply does
// nothing, and anyone else who would have finished it finds it finished.
// For the proxy, holding the connection's codec, after it withdrew the
// stream from the upstream layer if it could.
func (s *Stream) Fail(detail string) {
	s.state.CompareAndSwap(stPaused, stAborted)
	s.ReplyAndFinish(codecs.ErrInternal, detail, InternalError, true)
}

// ReplyAndFinish answers the request with the codec's error reply (a
// oneway request is dropped instead) and finishes it, unless it already
// finished. locked says whether the caller holds the connection's codec.
// For the proxy and the terminal filter; filters call Reply.
func (s *Stream) ReplyAndFinish(kind codecs.ErrorKind, detail string, flags Flag, locked bool) {
	if !s.done.CompareAndSwap(false, true) {
		return
	}
	s.answering()
	if s.Request.Type != codecs.Oneway {
		s.conn.LocalReply(s, kind, detail, locked)
	}
	s.Outcome = Outcome{LocalReply: kind, Detail: detail, Flags: flags}
	s.finished()
}

// Respond relays the upstream's response m: OnResponse of every filter in
// reverse order, then encode (with enc, the codec that decoded m) and
// write, then OnDone. A response the codec cannot encode becomes an
// internal-error reply; so does one it panics encoding, and the panic
// then goes on to the caller, whose codec it is, once the client has its
// answer (the stream is finished: nobody else would answer it).
func (s *Stream) Respond(m *codecs.Message, enc codecs.Codec) {
	if !s.done.CompareAndSwap(false, true) {
		return
	}
	s.Response = m
	for i := len(s.chain.Filters) - 1; i >= 0; i-- {
		s.onResponse(i)
	}
	m.ID = s.Request.ID
	out, p, err := encode(enc, m)
	s.Response = nil
	s.answering()
	if p != nil {
		err = fmt.Errorf("codec panicked: %v", p.v)
	}
	if err != nil {
		s.conn.LocalReply(s, codecs.ErrInternal, "breeze: cannot encode response: "+err.Error(), false)
		s.Outcome = Outcome{LocalReply: codecs.ErrInternal, Detail: err.Error(), Flags: InternalError}
	} else {
		s.conn.Write(out)
		s.BytesOut = len(out)
		s.Outcome = Outcome{Responded: true, Status: m.Status, Code: m.Code}
	}
	s.finished()
	if p != nil {
		panic(p)
	}
}

// encoderPanic is a panic of a codec encoding a response, with its stack.
type encoderPanic struct {
	v     any
	stack []byte
}

func (p *encoderPanic) String() string {
	return fmt.Sprintf("encoding a response: %v\n%s", p.v, p.stack)
}

// encode is enc.Encode(m), returning a panic instead of raising it.
func encode(enc codecs.Codec, m *codecs.Message) (out []byte, p *encoderPanic, err error) {
	defer func() {
		if v := recover(); v != nil {
			p = &encoderPanic{v: v, stack: debug.Stack()}
		}
	}()
	out, err = enc.Encode(m)
	return out, nil, err
}

func (s *Stream) onResponse(i int) {
	defer func() {
		if r := recover(); r != nil {
			s.conn.Panicked(s, "filter "+s.chain.Names[i]+" OnResponse", r, debug.Stack())
		}
	}()
	s.chain.Filters[i].OnResponse(s)
}

// Finish ends the stream with an outcome the caller already acted on (a
// oneway sent, a client gone), unless it already finished.
func (s *Stream) Finish(o Outcome) {
	if !s.done.CompareAndSwap(false, true) {
		return
	}
	s.Outcome = o
	s.finished()
}

func (s *Stream) finished() {
	s.End = time.Now()
	s.Outcome.Flags |= s.flags
	for i := range s.chain.Filters {
		s.onDone(i)
	}
	s.conn.Done(s)
}

func (s *Stream) onDone(i int) {
	defer func() {
		if r := recover(); r != nil {
			s.conn.Panicked(s, "filter "+s.chain.Names[i]+" OnDone", r, debug.Stack())
		}
	}()
	s.chain.Filters[i].OnDone(s)
}

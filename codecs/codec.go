// Package codecs defines the protocol-neutral message that Breeze routes, the
// codec interface every protocol implements, and a registry of codecs by name.
//
// A codec turns bytes into Messages and back. It decodes only what routing
// needs (the header and routable metadata) and passes the rest of the frame
// through as opaque bytes. It knows nothing of sockets, Envoy or routing.
package codecs

import (
	"fmt"

	"github.com/breeze-mesh/breeze/internal/registry"
)

// MessageType says what a decoded frame is.
type MessageType uint8

const (
	// Request is a two-way call: exactly one response is expected.
	Request MessageType = iota + 1
	// Response answers a Request (successful or not, see Message.Status).
	Response
	// Oneway is a call that expects no response.
	Oneway
	// Heartbeat is a keep-alive that the receiver answers with HeartbeatReply.
	Heartbeat
	// HeartbeatReply answers a Heartbeat.
	HeartbeatReply
	// GoAway announces that the sender is shutting down (Dubbo's READONLY
	// event): send it no new requests; requests in flight still complete.
	GoAway
)

func (t MessageType) String() string {
	switch t {
	case Request:
		return "request"
	case Response:
		return "response"
	case Oneway:
		return "oneway"
	case Heartbeat:
		return "heartbeat"
	case HeartbeatReply:
		return "heartbeat_reply"
	case GoAway:
		return "goaway"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// IsRequest reports whether the message is a call (two-way or oneway).
func (t MessageType) IsRequest() bool { return t == Request || t == Oneway }

// ResponseStatus is the protocol-neutral outcome carried by a Response.
type ResponseStatus uint8

const (
	StatusOK ResponseStatus = iota
	// StatusAppError: the call ran and the application answered with an
	// exception (Dubbo status 20 with an exception value, Thrift exception).
	StatusAppError
	// StatusError: the peer or a proxy answered with a protocol-level error.
	StatusError
)

// GatewayErrors is implemented by codecs whose protocol has statuses that
// mean "the provider (or a proxy before it) is overloaded or timed out"
// rather than "the call failed": outlier detection counts those as gateway
// errors (Envoy's 502/503/504).
type GatewayErrors interface {
	IsGatewayError(code uint32) bool
}

// ReplyCoder is implemented by codecs that say which status, in the
// protocol's own numbers (as Message.Code has them), their LocalReply of
// each kind carries: what metrics report as the response code of a
// request the proxy answered itself, and how a config names a reply by
// the status a client sees (fault aborts).
type ReplyCoder interface {
	ReplyCode(kind ErrorKind) uint32
}

// KeyCarrier is implemented by codecs some of whose frames have nowhere
// to carry Mutations (Thrift's framed and unframed transports):
// CarriesKeys reports whether Encode writes m's Mutations into its frame.
// A codec that does not implement it carries them in every request.
type KeyCarrier interface {
	CarriesKeys(m *Message) bool
}

// ErrorKind is the reason for a reply the proxy builds itself.
type ErrorKind uint8

const (
	ErrNoRoute ErrorKind = iota + 1
	ErrNoHealthyUpstream
	ErrTimeout
	ErrOverloaded
	ErrBadRequest
	ErrInternal
)

func (k ErrorKind) String() string {
	switch k {
	case ErrNoRoute:
		return "no_route"
	case ErrNoHealthyUpstream:
		return "no_healthy_upstream"
	case ErrTimeout:
		return "timeout"
	case ErrOverloaded:
		return "overloaded"
	case ErrBadRequest:
		return "bad_request"
	case ErrInternal:
		return "internal"
	}
	return fmt.Sprintf("error(%d)", uint8(k))
}

// Text is the human wording of k for error replies and log lines, e.g.
// "no healthy upstream"; String is the token for counters and labels, e.g.
// "no_healthy_upstream". A kind without a wording gives its String.
func (k ErrorKind) Text() string {
	switch k {
	case ErrNoRoute:
		return "no route"
	case ErrNoHealthyUpstream:
		return "no healthy upstream"
	case ErrTimeout:
		return "upstream timeout"
	case ErrOverloaded:
		return "overloaded"
	case ErrBadRequest:
		return "bad request"
	case ErrInternal:
		return "internal error"
	}
	return k.String()
}

// ErrorKindByName returns the kind whose String is name ("overloaded").
func ErrorKindByName(name string) (ErrorKind, bool) {
	for k := ErrorKind(1); ; k++ {
		s := k.String()
		if s == fmt.Sprintf("error(%d)", uint8(k)) {
			return 0, false // past the last kind
		}
		if s == name {
			return k, true
		}
	}
}

// KV is one routable key/value.
type KV struct {
	Key, Value string
}

// Metadata is a small ordered list of key/values. A slice rather than a map:
// messages carry a dozen keys at most, and a slice can be reused across
// requests without allocating.
type Metadata []KV

// Get returns the value of key and whether it is present.
func (m Metadata) Get(key string) (string, bool) {
	for i := range m {
		if m[i].Key == key {
			return m[i].Value, true
		}
	}
	return "", false
}

// Set overwrites key if present and appends it otherwise.
func (m *Metadata) Set(key, value string) {
	for i := range *m {
		if (*m)[i].Key == key {
			(*m)[i].Value = value
			return
		}
	}
	*m = append(*m, KV{key, value})
}

// Message is one decoded frame.
//
// Frame holds the whole frame as received. Encode writes it back out with
// the (possibly rewritten) ID and Mutations applied; untouched parts such as
// call arguments are never decoded or copied more than needed.
type Message struct {
	Type MessageType
	// ID is the request id (Dubbo request id, Thrift seqid). The proxy
	// rewrites it on shared upstream connections; Encode writes it into the frame.
	ID uint64
	// Status is meaningful for Response only.
	Status ResponseStatus
	// Code is a response's status in the protocol's own numbers (Dubbo's
	// status byte, 20 for OK; Thrift's TApplicationException type, 0 for a
	// reply): what retry policies list and outlier detection classifies.
	Code uint32
	// Metadata are the routable attributes the codec decoded (see each codec's README).
	Metadata Metadata
	// Mutations are key/values the codec adds or overwrites when encoding
	// (Dubbo attachments, Thrift headers), in requests and responses alike.
	// A frame with nowhere to carry them (see each codec's README) is sent
	// without them or refused, never half-changed.
	Mutations Metadata
	// Removals are keys the codec deletes from the frame when encoding
	// (Dubbo attachments, Thrift headers), before it applies Mutations: a
	// key both removed and mutated goes out with the mutation's value. A
	// key the frame does not carry, or a frame with nowhere to carry keys,
	// is sent as it is (never counted as an ignored mutation). What a
	// codec cannot remove is in its README (Dubbo: a key whose value is a
	// list, map or object).
	Removals []string
	// Frame is the frame's bytes. The message owns them: the codec may patch them in place.
	Frame []byte
	// Private is codec scratch space (offsets of parts of Frame), so that
	// Encode needs no second parse and decoding needs no allocation for it.
	Private [4]int
}

// Reset clears m for reuse, keeping the capacity of its slices.
func (m *Message) Reset() {
	m.Type = 0
	m.ID = 0
	m.Status = StatusOK
	m.Code = 0
	m.Metadata = m.Metadata[:0]
	m.Mutations = m.Mutations[:0]
	m.Removals = m.Removals[:0]
	m.Frame = nil
	m.Private = [4]int{}
}

// ProtocolError is a frame the codec cannot accept. The connection it came
// from is unusable: the proxy counts Reason and closes that connection only.
type ProtocolError struct {
	// Reason is a short stable token for counters, e.g. "bad_magic".
	Reason string
	// Detail says what was wrong, for the log line.
	Detail string
}

func (e *ProtocolError) Error() string {
	if e.Detail == "" {
		return "protocol error: " + e.Reason
	}
	return "protocol error: " + e.Reason + ": " + e.Detail
}

// Errorf builds a ProtocolError.
func Errorf(reason, format string, args ...any) *ProtocolError {
	return &ProtocolError{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// Codec translates one connection's bytes. A Codec instance belongs to one
// connection (it may keep per-connection state such as a detected
// transport) and is used by one goroutine at a time.
type Codec interface {
	// Decode decodes at most one frame from the front of buf into msg (which
	// the caller has Reset). It returns the number of bytes the frame took;
	// 0 and a nil error mean buf does not yet hold a whole frame. msg.Frame
	// aliases buf[:n]. A non-nil error is a *ProtocolError.
	Decode(buf []byte, msg *Message) (n int, err error)
	// Encode returns the bytes to send for msg: its frame with msg.ID and
	// msg.Mutations applied. It may patch msg.Frame in place and may return it.
	Encode(msg *Message) ([]byte, error)
	// LocalReply builds the protocol's own error response to req (same id),
	// so that a real client sees a proper error and does not hang. It
	// needs nothing but req (its id, metadata and Private words, which the
	// proxy keeps for every request in flight): a fresh instance of the
	// codec must build the same reply, since the proxy answers with one
	// when the connection's instance may be broken (a recovered panic).
	LocalReply(req *Message, kind ErrorKind, detail string) []byte
	// HeartbeatReply builds the answer to a Heartbeat.
	HeartbeatReply(hb *Message) []byte
}

// Flavored is implemented by codecs whose connections come in variants
// that cannot share one upstream connection (Thrift: framed or unframed,
// binary or compact, THeader...). Flavor names the variant of the frame
// last decoded ("" before the first); the proxy keeps one upstream pool per
// endpoint and flavor, so a server never sees two variants on a connection.
type Flavored interface {
	Flavor() string
}

// Pinger is implemented by codecs whose protocol has a keep-alive request.
// The proxy sends one on an upstream connection that has been idle, so
// that the server (which closes silent connections, as Dubbo providers do
// after three missed heartbeats) keeps it open. Heartbeat may be called
// concurrently with Decode and must not touch the codec's decoding state.
type Pinger interface {
	Heartbeat(id uint64) []byte
}

// Describer says which metadata keys name a request's service and method,
// so that protocol-neutral code (error replies, logs, metrics, access logs)
// can name a request without knowing the protocol.
type Describer interface {
	// RequestKeys returns the metadata keys of the service and the method
	// ("" for a part the protocol does not name).
	RequestKeys() (service, method string)
}

// Describe names the service and method of a request decoded by c, from
// its metadata md: the values of the keys c's RequestKeys gives. Parts that
// are absent, and both parts for a codec that is not a Describer, are "".
func Describe(c Codec, md Metadata) (service, method string) {
	d, ok := c.(Describer)
	if !ok {
		return "", ""
	}
	sk, mk := d.RequestKeys()
	if sk != "" {
		service, _ = md.Get(sk)
	}
	if mk != "" {
		method, _ = md.Get(mk)
	}
	return service, method
}

// Options configure a codec instance.
type Options struct {
	// MaxFrameSize bounds one frame in bytes; 0 means the codec's default.
	MaxFrameSize int
	// Params are codec-specific settings (see each codec's README).
	Params map[string]string
}

// Factory makes a Codec for one connection. It returns an error when the
// options are invalid, naming the option.
type Factory func(opts Options) (Codec, error)

var byName registry.Registry[Factory]

// Register makes a codec available under name. Codecs call it from init.
func Register(name string, f Factory) {
	if !byName.Add(name, f) {
		panic("codecs: codec registered twice: " + name)
	}
}

// Lookup returns the factory registered under name.
func Lookup(name string) (Factory, bool) { return byName.Lookup(name) }

// Instance makes an instance of the named codec with default options, for
// asking what it can do (its optional interfaces: Describer, ReplyCoder,
// KeyCarrier, GatewayErrors); nil when no such codec is registered or it
// cannot be made so.
func Instance(name string) Codec {
	factory, ok := Lookup(name)
	if !ok {
		return nil
	}
	c, err := factory(Options{})
	if err != nil {
		return nil
	}
	return c
}

// Names lists the registered codecs, sorted.
func Names() []string { return byName.Names() }

// FrameSizer is implemented by codecs whose frames carry their length up
// front (Dubbo's header, Thrift's framed and header transports). The proxy
// uses it to reserve a large frame's whole buffer when its first bytes
// arrive, instead of growing it read after read.
type FrameSizer interface {
	// FrameSize returns the length of the frame at the front of buf, or 0
	// when buf is too short to tell, the frame carries no length, or the
	// length is not one Decode would accept (over the codec's limit).
	FrameSize(buf []byte) int
}

// Append adds data, just read, to pending, the bytes of a connection not
// yet decoded, and returns the result. With nothing pending, data itself is
// returned (the caller owns it). When pending must grow and c can tell the
// length of the frame it starts, its whole length is reserved at once: a
// 1 MiB frame read in 16 KiB pieces is copied once, not at each doubling.
func Append(c Codec, pending, data []byte) []byte {
	if len(pending) == 0 {
		return data
	}
	need := len(pending) + len(data)
	if need > cap(pending) {
		if fs, ok := c.(FrameSizer); ok {
			if size := fs.FrameSize(pending); size > need {
				grown := make([]byte, len(pending), size)
				copy(grown, pending)
				pending = grown
			}
		}
	}
	return append(pending, data...)
}

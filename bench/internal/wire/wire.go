// Package wire is what the load tool and the echo server know of each
// protocol: how to build valid request frames once, frame boundaries, how to
// classify a response, and the echo reply. Protocols are chosen by name
// (-proto), so that Thrift joins Dubbo by adding one file.
package wire

import (
	"bufio"
	"fmt"
	"sort"
)

// Request is one kind of request the load tool sends: a complete frame built
// once, whose id is patched in by Protocol.AppendRequest.
type Request struct {
	// Name says what the request is, e.g. "com.acme.user.UserService.getUser".
	Name  string
	Frame []byte
	// ReplyLen is the length of the echo server's reply to this request.
	ReplyLen int
}

// Kind classifies a frame the load tool receives.
type Kind uint8

const (
	// OK is a successful response.
	OK Kind = iota
	// AppError is a response carrying an application exception.
	AppError
	// Error is a response with an error status (no route, timeout...).
	Error
	// Ping is a heartbeat from the peer, which must be answered (Protocol.Echo does).
	Ping
	// Other is any other frame that needs no answer (a heartbeat reply).
	Other
)

// Response is what the load tool needs to know of a received frame.
type Response struct {
	ID   uint64
	Kind Kind
	// Status names an error status for the error counters, e.g. "status_60".
	Status string
}

// Protocol is one wire protocol.
type Protocol interface {
	Name() string
	// Requests builds the frames of a mix (see Mixes) with payload bytes of
	// opaque call argument each.
	Requests(mix string, payload int) ([]Request, error)
	// AppendRequest appends r's frame with request id id to dst.
	AppendRequest(dst []byte, r *Request, id uint64) []byte
	// HeaderLen is the number of bytes FrameLen needs.
	HeaderLen() int
	// FrameLen returns the length of the frame whose first HeaderLen bytes are hdr.
	FrameLen(hdr []byte) (int, error)
	// ParseResponse classifies a whole frame received by a client.
	ParseResponse(f []byte) (Response, error)
	// Echo appends the echo server's answer to the whole frame f (nothing for
	// a oneway request): a successful response carrying the request's
	// argument, or a heartbeat reply.
	Echo(dst, f []byte) ([]byte, error)
}

// IDMask returns the mask of the request ids p carries: all 64 bits unless p
// has an IDMask method (Thrift's seqids are 32-bit). Ids from the load tool
// keep a slot in their low 16 bits, so masking keeps them unique in flight.
func IDMask(p Protocol) uint64 {
	if m, ok := p.(interface{ IDMask() uint64 }); ok {
		return m.IDMask()
	}
	return ^uint64(0)
}

var protocols = map[string]Protocol{}

func register(p Protocol) { protocols[p.Name()] = p }

// Lookup returns the protocol named name.
func Lookup(name string) (Protocol, error) {
	if p, ok := protocols[name]; ok {
		return p, nil
	}
	return nil, fmt.Errorf("unknown protocol %q (have %v)", name, Names())
}

// Names lists the protocols, sorted.
func Names() []string {
	var n []string
	for k := range protocols {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// Mixes of requests every protocol builds.
const (
	// MixRoutes is ten kinds of request, sent in turn, each taken by a
	// different route of the bench route table (bench/configs): the first
	// nine by interface, method, version or attachment, the tenth by the
	// catch-all weighted split.
	MixRoutes = "routes"
	// MixSingle is one request kind.
	MixSingle = "single"
)

// FrameBuffered reports whether br holds a whole frame of p already, so
// that a reader can take it without blocking (and batch its replies).
func FrameBuffered(br *bufio.Reader, p Protocol) bool {
	hl := p.HeaderLen()
	if br.Buffered() < hl {
		return false
	}
	h, _ := br.Peek(hl)
	n, err := p.FrameLen(h)
	return err == nil && br.Buffered() >= n
}

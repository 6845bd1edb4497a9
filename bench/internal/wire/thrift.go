package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
)

// Apache Thrift, framed transport, binary protocol (strict): what Apache
// Thrift's TFramedTransport + TBinaryProtocol write (see codecs/thrift/README.md).
//
// A request is a CALL of one method with one argument, `1: binary payload`;
// the echo server answers a REPLY whose result struct carries the same bytes
// as field 0 (success). Thrift seqids are 32 bits: the load tool masks its
// request ids with IDMask.
type thrift struct{}

func init() { register(thrift{}) }

const (
	thriftFrameHeader = 4
	thriftVersion1    = 0x80010000
	thriftVersionMask = 0xffff0000
	thriftCall        = 1
	thriftReply       = 2
	thriftException   = 3
	thriftOneway      = 4
	thriftTypeStop    = 0
	thriftTypeI32     = 8
	thriftTypeString  = 11
	// maxThriftFrame is Apache Thrift's DEFAULT_MAX_FRAME_SIZE.
	maxThriftFrame = 16384000
)

func (thrift) Name() string { return "thrift" }

// IDMask: seqids are 32-bit.
func (thrift) IDMask() uint64 { return 0xffffffff }

// thriftRoutesMix: each method is taken by a different route of
// bench/configs (breeze-thrift.yaml and envoy-thrift.yaml), in order.
var thriftRoutesMix = []string{
	"getUser",     // user-get: method exact
	"updateUser",  // user-update: method prefix (Envoy: exact)
	"deleteUser",  // user-delete: method exact
	"listOrders",  // order-list: method regex (Envoy: exact)
	"createOrder", // order-create: 50/50 split
	"pay",         // pay: method exact
	"refund",      // refund: method exact
	"queryStock",  // stock-query: method exact
	"reserveItem", // inventory: method prefix (Envoy: exact)
	"echo",        // default: 80/10/10 split
}

func (t thrift) Requests(mix string, payload int) ([]Request, error) {
	if payload < 0 || payload > 4<<20 {
		return nil, fmt.Errorf("payload %d: want 0 to 4 MiB", payload)
	}
	var methods []string
	switch mix {
	case MixRoutes:
		methods = thriftRoutesMix
	case MixSingle:
		methods = thriftRoutesMix[len(thriftRoutesMix)-1:]
	default:
		return nil, fmt.Errorf("unknown mix %q (want %q or %q)", mix, MixRoutes, MixSingle)
	}
	arg := make([]byte, payload)
	for i := range arg {
		arg[i] = byte('a' + i%26)
	}
	var out []Request
	for _, m := range methods {
		f := thriftMessage(nil, thriftCall, m, 0, 1, arg)
		out = append(out, Request{Name: m, Frame: f, ReplyLen: len(f)})
	}
	return out, nil
}

// thriftMessage appends a framed binary message of type typ whose struct
// holds one binary field id (or nothing when arg is nil and id < 0).
func thriftMessage(dst []byte, typ uint32, name string, seqid uint32, id int16, arg []byte) []byte {
	n := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, thriftVersion1|typ)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(name)))
	dst = append(dst, name...)
	dst = binary.BigEndian.AppendUint32(dst, seqid)
	if id >= 0 {
		dst = append(dst, thriftTypeString)
		dst = binary.BigEndian.AppendUint16(dst, uint16(id))
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(arg)))
		dst = append(dst, arg...)
	}
	dst = append(dst, thriftTypeStop)
	binary.BigEndian.PutUint32(dst[n:], uint32(len(dst)-n-thriftFrameHeader))
	return dst
}

// thriftHeader reads the message header of the whole frame f: its type, its
// name, the seqid and the offset of the struct that follows.
func thriftHeader(f []byte) (typ uint32, name []byte, seqid uint32, body int, err error) {
	if len(f) < thriftFrameHeader+12 {
		return 0, nil, 0, 0, errors.New("thrift: frame too short")
	}
	v := binary.BigEndian.Uint32(f[4:])
	if v&thriftVersionMask != thriftVersion1 {
		return 0, nil, 0, 0, fmt.Errorf("thrift: version word %#x, want binary strict", v)
	}
	typ = v & 0xff
	nl := int(binary.BigEndian.Uint32(f[8:]))
	if nl < 0 || 12+nl+4 > len(f) {
		return 0, nil, 0, 0, errors.New("thrift: name past the frame")
	}
	name = f[12 : 12+nl]
	seqid = binary.BigEndian.Uint32(f[12+nl:])
	return typ, name, seqid, 12 + nl + 4, nil
}

func (thrift) AppendRequest(dst []byte, r *Request, id uint64) []byte {
	n := len(dst)
	dst = append(dst, r.Frame...)
	nl := int(binary.BigEndian.Uint32(r.Frame[8:]))
	binary.BigEndian.PutUint32(dst[n+12+nl:], uint32(id))
	return dst
}

func (thrift) HeaderLen() int { return thriftFrameHeader }

func (thrift) FrameLen(h []byte) (int, error) {
	n := int(int32(binary.BigEndian.Uint32(h)))
	if n < 12 || n > maxThriftFrame-thriftFrameHeader {
		return 0, fmt.Errorf("thrift: bad frame length %d", n)
	}
	return n + thriftFrameHeader, nil
}

func (thrift) ParseResponse(f []byte) (Response, error) {
	typ, _, seqid, body, err := thriftHeader(f)
	r := Response{ID: uint64(seqid)}
	if err != nil {
		return r, err
	}
	if body >= len(f) {
		return r, errors.New("thrift: message without a struct")
	}
	switch typ {
	case thriftReply:
		// Field 0 (success) or an empty struct (void) is a success; any other
		// field is a declared exception.
		if ft := f[body]; ft == thriftTypeStop {
			r.Kind = OK
		} else if body+3 > len(f) {
			return r, errors.New("thrift: truncated result struct")
		} else if binary.BigEndian.Uint16(f[body+1:]) == 0 {
			r.Kind = OK
		} else {
			r.Kind, r.Status = AppError, "app_exception"
		}
	case thriftException:
		// TApplicationException {1: string message, 2: i32 type}.
		r.Kind, r.Status = Error, "exception"
		if t, ok := thriftExceptionType(f[body:]); ok {
			r.Status = "exception_" + strconv.Itoa(int(t))
		}
	default:
		return r, fmt.Errorf("thrift: message type %d where a response was expected", typ)
	}
	return r, nil
}

// thriftExceptionType finds field 2 (i32 type) of a TApplicationException.
func thriftExceptionType(b []byte) (int32, bool) {
	for off := 0; off < len(b); {
		ft := b[off]
		if ft == thriftTypeStop || off+3 > len(b) {
			return 0, false
		}
		id := binary.BigEndian.Uint16(b[off+1:])
		off += 3
		switch ft {
		case thriftTypeI32:
			if off+4 > len(b) {
				return 0, false
			}
			if id == 2 {
				return int32(binary.BigEndian.Uint32(b[off:])), true
			}
			off += 4
		case thriftTypeString:
			if off+4 > len(b) {
				return 0, false
			}
			off += 4 + int(binary.BigEndian.Uint32(b[off:]))
		default:
			return 0, false
		}
	}
	return 0, false
}

// Echo answers a CALL with a REPLY of the same name and seqid whose result
// struct carries the call's first argument, when it is a binary, as field 0
// (success); a call with another signature gets a void reply. A ONEWAY gets
// nothing.
func (thrift) Echo(dst, f []byte) ([]byte, error) {
	typ, name, seqid, body, err := thriftHeader(f)
	if err != nil {
		return dst, err
	}
	switch typ {
	case thriftOneway, thriftReply, thriftException:
		return dst, nil
	case thriftCall:
	default:
		return dst, fmt.Errorf("thrift: message type %d", typ)
	}
	if body >= len(f) {
		return dst, errors.New("thrift: call without an argument struct")
	}
	if f[body] != thriftTypeString {
		return thriftMessage(dst, thriftReply, string(name), seqid, -1, nil), nil
	}
	if body+7 > len(f) {
		return dst, errors.New("thrift: truncated argument")
	}
	n := int(binary.BigEndian.Uint32(f[body+3:]))
	if n < 0 || body+7+n > len(f) {
		return dst, errors.New("thrift: argument past the frame")
	}
	return thriftReplyTo(dst, name, seqid, f[body+7:body+7+n]), nil
}

// thriftReplyTo is thriftMessage for a REPLY without converting name.
func thriftReplyTo(dst, name []byte, seqid uint32, arg []byte) []byte {
	n := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, thriftVersion1|thriftReply)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(name)))
	dst = append(dst, name...)
	dst = binary.BigEndian.AppendUint32(dst, seqid)
	dst = append(dst, thriftTypeString, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(arg)))
	dst = append(dst, arg...)
	dst = append(dst, thriftTypeStop)
	binary.BigEndian.PutUint32(dst[n:], uint32(len(dst)-n-thriftFrameHeader))
	return dst
}

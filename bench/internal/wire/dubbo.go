package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	hessian "github.com/apache/dubbo-go-hessian2"
)

// Dubbo 2 over TCP with hessian2 bodies (see codecs/dubbo/README.md).
type dubbo struct{}

func init() { register(dubbo{}) }

const (
	dubboHeader     = 16
	dubboMagicHigh  = 0xda
	dubboMagicLow   = 0xbb
	dubboRequest    = 0x80
	dubboTwoWay     = 0x40
	dubboEvent      = 0x20
	dubboSerialMask = 0x1f
	dubboHessian2   = 2
	dubboStatusOK   = 20
	// Result types as hessian2 compact ints (0x90 + n).
	dubboResultException = 0x90
	dubboResultValue     = 0x91
	dubboResultNull      = 0x92
	dubboResultExcAtt    = 0x93
	// maxDubboFrame is the largest frame the tools accept (Java's 8 MiB payload limit).
	maxDubboFrame = dubboHeader + 8<<20
)

func (dubbo) Name() string { return "dubbo" }

// dubboCall is one kind of request of a mix.
type dubboCall struct {
	iface, version, method string
	tenant                 string
}

// routesMix: each call is taken by a different route of bench/configs
// (breeze.yaml and envoy-dubbo.yaml), in order.
var routesMix = []dubboCall{
	{"com.acme.user.UserService", "1.0.0", "getUser", "silver"},           // user-get: method exact
	{"com.acme.user.UserService", "1.0.0", "updateUser", "silver"},        // user-update: method prefix
	{"com.acme.user.UserService", "1.0.0", "deleteUser", "gold"},          // user-gold: attachment
	{"com.acme.order.OrderService", "1.0.0", "listOrders", "silver"},      // order-list: method regex
	{"com.acme.order.OrderService", "1.0.0", "create", "silver"},          // order-create: 50/50 split
	{"com.acme.pay.PayService", "2.0.0", "pay", "silver"},                 // pay-v2: service version
	{"com.acme.pay.PayService", "1.0.0", "refund", "silver"},              // pay-refund: method exact
	{"com.acme.stock.StockService", "1.0.0", "query", "silver"},           // stock-query: method exact
	{"com.acme.inventory.InventoryService", "1.0.0", "reserve", "silver"}, // inventory: interface prefix
	{"com.acme.misc.EchoService", "1.0.0", "echo", "silver"},              // default: 80/10/10 split
}

func (d dubbo) Requests(mix string, payload int) ([]Request, error) {
	if payload < 0 || payload > 4<<20 {
		return nil, fmt.Errorf("payload %d: want 0 to 4 MiB", payload)
	}
	var calls []dubboCall
	switch mix {
	case MixRoutes:
		calls = routesMix
	case MixSingle:
		calls = routesMix[len(routesMix)-1:]
	default:
		return nil, fmt.Errorf("unknown mix %q (want %q or %q)", mix, MixRoutes, MixSingle)
	}
	arg := make([]byte, payload)
	for i := range arg {
		arg[i] = byte('a' + i%26)
	}
	var out []Request
	for _, c := range calls {
		f, err := dubboRequestFrame(c, arg)
		if err != nil {
			return nil, err
		}
		argLen := len(hessianValue(arg))
		out = append(out, Request{
			Name:     c.iface + "." + c.method,
			Frame:    f,
			ReplyLen: dubboHeader + 1 + argLen,
		})
	}
	return out, nil
}

func hessianValue(v any) []byte {
	e := hessian.NewEncoder()
	if err := e.Encode(v); err != nil {
		panic(err) // strings and []byte always encode
	}
	return e.Buffer()
}

// dubboRequestFrame builds a two-way request the way Java's DubboCodec
// writes it: dubbo version, service path, service version, method,
// descriptor, the argument (a byte[]), then a dozen attachments.
func dubboRequestFrame(c dubboCall, arg []byte) ([]byte, error) {
	attachments := [][2]string{
		{"path", c.iface},
		{"interface", c.iface},
		{"version", c.version},
		{"timeout", "3000"},
		{"application", "bench-consumer"},
		{"remote.application", "bench-consumer"},
		{"tenant", c.tenant},
		{"environment", "prod"},
		{"zone", "az-1"},
		{"region", "north-1"},
		{"trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"},
		{"span_id", "00f067aa0ba902b7"},
	}
	e := hessian.NewEncoder()
	e.Append(make([]byte, dubboHeader))
	for _, v := range []any{"2.0.2", c.iface, c.version, c.method, "[B", arg} {
		if err := e.Encode(v); err != nil {
			return nil, err
		}
	}
	e.Append([]byte{'H'})
	for _, kv := range attachments {
		if err := e.Encode(kv[0]); err != nil {
			return nil, err
		}
		if err := e.Encode(kv[1]); err != nil {
			return nil, err
		}
	}
	e.Append([]byte{'Z'})
	f := e.Buffer()
	f[0], f[1], f[2] = dubboMagicHigh, dubboMagicLow, dubboRequest|dubboTwoWay|dubboHessian2
	binary.BigEndian.PutUint32(f[12:], uint32(len(f)-dubboHeader))
	return f, nil
}

func (dubbo) AppendRequest(dst []byte, r *Request, id uint64) []byte {
	n := len(dst)
	dst = append(dst, r.Frame...)
	binary.BigEndian.PutUint64(dst[n+4:], id)
	return dst
}

func (dubbo) HeaderLen() int { return dubboHeader }

func (dubbo) FrameLen(h []byte) (int, error) {
	if h[0] != dubboMagicHigh || h[1] != dubboMagicLow {
		return 0, fmt.Errorf("dubbo: bad magic %#x%02x", h[0], h[1])
	}
	n := int(int32(binary.BigEndian.Uint32(h[12:]))) + dubboHeader
	if n < dubboHeader || n > maxDubboFrame {
		return 0, fmt.Errorf("dubbo: bad frame length %d", n)
	}
	return n, nil
}

func (dubbo) ParseResponse(f []byte) (Response, error) {
	r := Response{ID: binary.BigEndian.Uint64(f[4:])}
	flag, status := f[2], f[3]
	switch {
	case flag&dubboEvent != 0 && flag&dubboRequest != 0:
		r.Kind = Ping
		return r, nil
	case flag&dubboEvent != 0:
		r.Kind = Other
		return r, nil
	case flag&dubboRequest != 0:
		return r, errors.New("dubbo: a request where a response was expected")
	case status != dubboStatusOK:
		r.Kind, r.Status = Error, "status_"+strconv.Itoa(int(status))
		return r, nil
	case len(f) == dubboHeader:
		return r, errors.New("dubbo: status-20 response without a body")
	}
	switch f[dubboHeader] {
	case dubboResultException, dubboResultExcAtt:
		r.Kind, r.Status = AppError, "app_exception"
	default:
		r.Kind = OK
	}
	return r, nil
}

// Echo answers a two-way request with status 20, result type "value" and the
// request's byte[] argument as the value (null when the call has another
// signature), a heartbeat with a heartbeat reply, and nothing else.
func (dubbo) Echo(dst, f []byte) ([]byte, error) {
	flag := f[2]
	if flag&dubboRequest == 0 || flag&dubboTwoWay == 0 {
		return dst, nil // a response, or oneway: nothing to answer
	}
	id := f[4:12]
	if flag&dubboEvent != 0 {
		// Heartbeat reply: event response, status 20, hessian2 null.
		dst = append(dst, dubboMagicHigh, dubboMagicLow, dubboEvent|dubboHessian2, dubboStatusOK)
		dst = append(dst, id...)
		return append(dst, 0, 0, 0, 1, 'N'), nil
	}
	if flag&dubboSerialMask != dubboHessian2 {
		return dst, fmt.Errorf("dubbo: serialization %d, want hessian2", flag&dubboSerialMask)
	}
	arg, err := dubboByteArg(f[dubboHeader:])
	if err != nil {
		return dst, err
	}
	dst = append(dst, dubboMagicHigh, dubboMagicLow, dubboHessian2, dubboStatusOK)
	dst = append(dst, id...)
	if arg == nil {
		return append(dst, 0, 0, 0, 1, dubboResultNull), nil
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(1+len(arg)))
	dst = append(dst, dubboResultValue)
	return append(dst, arg...), nil
}

var errShort = errors.New("dubbo: truncated hessian2 body")

// dubboByteArg returns the hessian2 bytes of the argument of a call whose
// descriptor is "[B" (one byte[]), or nil for any other descriptor.
func dubboByteArg(b []byte) ([]byte, error) {
	off := 0
	var desc []byte
	for i := range 5 { // dubbo version, path, version, method, descriptor
		start := off
		var err error
		if off, err = skipHessianString(b, off); err != nil {
			return nil, err
		}
		if i == 4 {
			desc = b[start:off]
		}
	}
	// "[B" as a hessian2 short string: length 2, then the bytes.
	if len(desc) != 3 || desc[0] != 2 || desc[1] != '[' || desc[2] != 'B' {
		return nil, nil
	}
	end, err := skipHessianBinary(b, off)
	if err != nil {
		return nil, err
	}
	return b[off:end], nil
}

// skipHessianString returns the offset after the hessian2 string at off.
// Lengths count UTF-16 units; a 4-byte UTF-8 sequence counts two.
func skipHessianString(b []byte, off int) (int, error) {
	for {
		if off >= len(b) {
			return 0, errShort
		}
		tag := b[off]
		var n int
		final := true
		switch {
		case tag <= 0x1f:
			n, off = int(tag), off+1
		case tag >= 0x30 && tag <= 0x33:
			if off+2 > len(b) {
				return 0, errShort
			}
			n, off = int(tag-0x30)<<8|int(b[off+1]), off+2
		case tag == 'S' || tag == 'R':
			if off+3 > len(b) {
				return 0, errShort
			}
			n, off, final = int(b[off+1])<<8|int(b[off+2]), off+3, tag == 'S'
		default:
			return 0, fmt.Errorf("dubbo: tag %#x where a string was expected", tag)
		}
		for n > 0 {
			if off >= len(b) {
				return 0, errShort
			}
			switch c := b[off]; {
			case c < 0x80:
				off++
			case c < 0xe0:
				off += 2
			case c < 0xf0:
				off += 3
			default:
				off += 4
				n--
			}
			n--
		}
		if off > len(b) {
			return 0, errShort
		}
		if final {
			return off, nil
		}
	}
}

// skipHessianBinary returns the offset after the hessian2 binary at off.
func skipHessianBinary(b []byte, off int) (int, error) {
	for {
		if off >= len(b) {
			return 0, errShort
		}
		tag := b[off]
		var n int
		final := true
		switch {
		case tag >= 0x20 && tag <= 0x2f:
			n, off = int(tag-0x20), off+1
		case tag >= 0x34 && tag <= 0x37:
			if off+2 > len(b) {
				return 0, errShort
			}
			n, off = int(tag-0x34)<<8|int(b[off+1]), off+2
		case tag == 'B' || tag == 'A':
			if off+3 > len(b) {
				return 0, errShort
			}
			n, off, final = int(b[off+1])<<8|int(b[off+2]), off+3, tag == 'B'
		default:
			return 0, fmt.Errorf("dubbo: tag %#x where a byte[] was expected", tag)
		}
		off += n
		if off > len(b) {
			return 0, errShort
		}
		if final {
			return off, nil
		}
	}
}

// Package peer starts real Apache Thrift Go and Kitex servers and clients
// of the Greeter service (idl/echo.thrift) in every transport and protocol
// the codec handles.
package peer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/apache/thrift/lib/go/thrift"
	"github.com/bytedance/gopkg/cloud/metainfo"
	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/pkg/transmeta"
	"github.com/cloudwego/kitex/server"
	"github.com/cloudwego/kitex/transport"

	"github.com/breeze-mesh/breeze/codecs/thrift/testdata/peers/peer/gen-go/echo"
	kecho "github.com/breeze-mesh/breeze/codecs/thrift/testdata/peers/peer/kitex_gen/echo"
	"github.com/breeze-mesh/breeze/codecs/thrift/testdata/peers/peer/kitex_gen/echo/greeter"
)

// Flavor is a transport and protocol as the codec names them.
type Flavor struct {
	Transport string // framed, unframed, header, ttheader
	Protocol  string // binary, compact
	NonStrict bool   // binary written without the version word
	Mux       bool   // multiplexed: method names "Greeter:method"
	Zlib      bool   // THeader client compressing with zlib
}

func (f Flavor) String() string {
	s := f.Transport + "_" + f.Protocol
	if f.NonStrict {
		s += "_nonstrict"
	}
	if f.Mux {
		s += "_mux"
	}
	if f.Zlib {
		s += "_zlib"
	}
	return s
}

// Handler is the Greeter implementation both frameworks serve.
type Handler struct {
	Name  string
	fired atomic.Int64
	// OnFire, if set, sees every oneway call.
	OnFire func(event string)
	// Header, if set, reads a request header for Greet to echo.
	Header func(ctx context.Context) (string, bool)
	// Middleware wraps the Apache server's processor functions
	// (thrift.WrapProcessor), e.g. to answer with a TApplicationException of
	// a chosen type; Kitex ignores it.
	Middleware []thrift.ProcessorMiddleware
}

// ErrBoom is what Greet returns for the name "boom": an undeclared error,
// which servers answer with a TApplicationException.
var ErrBoom = errors.New("boom")

func (h *Handler) Greet(ctx context.Context, name string, user *echo.User) (string, error) {
	if name == "boom" {
		return "", ErrBoom
	}
	s := fmt.Sprintf("hello %s from %s", name, h.Name)
	if h.Header != nil {
		if v, ok := h.Header(ctx); ok {
			s += " [" + v + "]"
		}
	}
	return s, nil
}

func (h *Handler) Whoami(ctx context.Context) (string, error) { return h.Name, nil }

func (h *Handler) Slow(ctx context.Context, ms int32) (string, error) {
	time.Sleep(time.Duration(ms) * time.Millisecond)
	return h.Name, nil
}

func (h *Handler) GetUser(ctx context.Context, id string) (*echo.User, error) {
	if id == "missing" {
		return nil, &echo.NotFound{Message: "no user " + id}
	}
	return SampleUser(), nil
}

func (h *Handler) Fire(ctx context.Context, event string) error {
	h.fired.Add(1)
	if h.OnFire != nil {
		h.OnFire(event)
	}
	return nil
}

func (h *Handler) Fired(ctx context.Context) (int64, error) { return h.fired.Load(), nil }

// SampleUser is the argument of the sample requests: strings, a list, a
// map, a nested struct, a double, a bool and binary.
func SampleUser() *echo.User {
	return &echo.User{
		ID: "A000-7f3c-41d2", Name: "Alex Example", Age: 42,
		Tags:   []string{"gold", "beta-tester", "eu-west", "newsletter", "mobile"},
		Attrs:  map[string]string{"plan": "enterprise", "locale": "en-GB", "team": "payments"},
		Friend: &echo.User{ID: "B111", Name: "Sam Friend", Age: 40, Tags: []string{"silver"}},
		Score:  97.5, Active: true, Avatar: []byte{0x89, 'P', 'N', 'G', 0, 1, 2, 3},
	}
}

// Conf is the Apache configuration of f.
func Conf(f Flavor) *thrift.TConfiguration {
	strict := !f.NonStrict
	conf := &thrift.TConfiguration{
		ConnectTimeout:     5 * time.Second,
		SocketTimeout:      10 * time.Second,
		TBinaryStrictRead:  thrift.BoolPtr(false),
		TBinaryStrictWrite: &strict,
	}
	if f.Protocol == "compact" {
		conf.THeaderProtocolID = thrift.THeaderProtocolIDPtrMust(thrift.THeaderProtocolCompact)
	}
	if f.Zlib {
		conf.THeaderTransforms = []thrift.THeaderTransformID{thrift.TransformZlib}
	}
	return conf
}

func protocolFactory(f Flavor, conf *thrift.TConfiguration) thrift.TProtocolFactory {
	switch {
	case f.Transport == "header":
		return thrift.NewTHeaderProtocolFactoryConf(conf)
	case f.Protocol == "compact":
		return thrift.NewTCompactProtocolFactoryConf(conf)
	}
	return thrift.NewTBinaryProtocolFactoryConf(conf)
}

// ServeApache serves h on ln with Apache Thrift Go in flavor f until ctx ends.
func ServeApache(ctx context.Context, ln net.Listener, f Flavor, h *Handler) {
	conf := Conf(f)
	var tf thrift.TTransportFactory
	switch f.Transport {
	case "framed":
		tf = thrift.NewTFramedTransportFactoryConf(thrift.NewTTransportFactory(), conf)
	case "unframed":
		tf = thrift.NewTBufferedTransportFactory(8192)
	case "header":
		tf = thrift.NewTHeaderTransportFactoryConf(nil, conf)
	default:
		panic("apache: no transport " + f.Transport)
	}
	var proc thrift.TProcessor = echo.NewGreeterProcessor(h)
	if len(h.Middleware) > 0 {
		proc = thrift.WrapProcessor(proc, h.Middleware...)
	}
	if f.Mux {
		mux := thrift.NewTMultiplexedProcessor()
		mux.RegisterProcessor("Greeter", proc)
		proc = mux
	}
	srv := thrift.NewTSimpleServer4(proc, &listener{ln: ln, conf: conf}, tf, protocolFactory(f, conf))
	srv.SetLogger(func(string) {})
	go func() {
		<-ctx.Done()
		srv.Stop()
	}()
	_ = srv.Serve()
}

// ApacheClient is an Apache Thrift Go client of flavor f.
type ApacheClient struct {
	*echo.GreeterClient
	trans thrift.TTransport
}

func (c *ApacheClient) Close() error { return c.trans.Close() }

// DialApache connects an Apache Thrift Go client of flavor f to addr.
func DialApache(addr string, f Flavor) (*ApacheClient, error) {
	conf := Conf(f)
	var trans thrift.TTransport = thrift.NewTSocketConf(addr, conf)
	switch f.Transport {
	case "framed":
		trans = thrift.NewTFramedTransportConf(trans, conf)
	case "unframed":
		trans = thrift.NewTBufferedTransport(trans, 8192)
	case "header":
		trans = thrift.NewTHeaderTransportConf(trans, conf)
	default:
		return nil, fmt.Errorf("apache: no transport %q", f.Transport)
	}
	if err := trans.Open(); err != nil {
		return nil, err
	}
	var proto thrift.TProtocol = protocolFactory(f, conf).GetProtocol(trans)
	oproto := proto
	if f.Mux {
		oproto = thrift.NewTMultiplexedProtocol(proto, "Greeter")
	}
	var client thrift.TClient = thrift.NewTStandardClient(proto, oproto)
	if hp, ok := proto.(*thrift.THeaderProtocol); ok && f.Mux {
		client = muxHeaderClient{TClient: client, hp: hp}
	}
	return &ApacheClient{GreeterClient: echo.NewGreeterClient(client), trans: trans}, nil
}

// muxHeaderClient writes a call's THeader headers (WithHeaders), which
// TStandardClient writes only when its output protocol is the
// THeaderProtocol itself: multiplexed, it is a TMultiplexedProtocol
// wrapping it, and Apache Thrift Go v0.22 sends no headers.
type muxHeaderClient struct {
	thrift.TClient
	hp *thrift.THeaderProtocol
}

func (c muxHeaderClient) Call(ctx context.Context, method string, args, result thrift.TStruct) (thrift.ResponseMeta, error) {
	c.hp.ClearWriteHeaders()
	for _, k := range thrift.GetWriteHeaderList(ctx) {
		if v, ok := thrift.GetHeader(ctx, k); ok {
			c.hp.SetWriteHeader(k, v)
		}
	}
	return c.TClient.Call(ctx, method, args, result)
}

// WithHeaders adds THeader key/values to ctx for an Apache client call.
func WithHeaders(ctx context.Context, kv ...string) context.Context {
	var keys []string
	for i := 0; i+1 < len(kv); i += 2 {
		ctx = thrift.SetHeader(ctx, kv[i], kv[i+1])
		keys = append(keys, kv[i])
	}
	return thrift.SetWriteHeaderList(ctx, keys)
}

// ServeKitex serves h on ln with Kitex until ctx ends. A Kitex server
// detects TTHeader and framed by itself. opts come after the defaults
// (a tracing suite, say).
func ServeKitex(ctx context.Context, ln net.Listener, h *Handler, opts ...server.Option) error {
	srv := greeter.NewServer(&kitexHandler{h}, append([]server.Option{server.WithListener(ln),
		server.WithMetaHandler(transmeta.ServerTTHeaderHandler),
		server.WithExitWaitTime(100 * time.Millisecond)}, opts...)...)
	go func() {
		<-ctx.Done()
		_ = srv.Stop()
	}()
	return srv.Run()
}

// kitexHandler adapts Handler to Kitex's generated types.
type kitexHandler struct{ h *Handler }

func (k kitexHandler) Greet(ctx context.Context, name string, user *kecho.User) (string, error) {
	return k.h.Greet(ctx, name, nil)
}
func (k kitexHandler) Whoami(ctx context.Context) (string, error) { return k.h.Whoami(ctx) }
func (k kitexHandler) Slow(ctx context.Context, ms int32) (string, error) {
	return k.h.Slow(ctx, ms)
}
func (k kitexHandler) GetUser(ctx context.Context, id string) (*kecho.User, error) {
	if id == "missing" {
		return nil, &kecho.NotFound{Message: "no user " + id}
	}
	return KitexUser(), nil
}
func (k kitexHandler) Fire(ctx context.Context, event string) error { return k.h.Fire(ctx, event) }
func (k kitexHandler) Fired(ctx context.Context) (int64, error)     { return k.h.Fired(ctx) }

// KitexUser is SampleUser in Kitex's generated types.
func KitexUser() *kecho.User {
	u := SampleUser()
	return &kecho.User{
		Id: u.ID, Name: u.Name, Age: u.Age, Tags: u.Tags, Attrs: u.Attrs,
		Friend: &kecho.User{Id: u.Friend.ID, Name: u.Friend.Name, Age: u.Friend.Age, Tags: u.Friend.Tags},
		Score:  u.Score, Active: u.Active, Avatar: u.Avatar,
	}
}

// DialKitex makes a Kitex client of addr over TTHeader or framed. opts
// come after the defaults (a tracing suite, say).
func DialKitex(addr, trans string, opts ...client.Option) (greeter.Client, error) {
	proto := transport.TTHeader
	if trans == "framed" {
		proto = transport.Framed
	}
	return greeter.NewClient("echo", append([]client.Option{client.WithHostPorts(addr), client.WithTransportProtocol(proto),
		client.WithMetaHandler(transmeta.ClientTTHeaderHandler),
		client.WithRPCTimeout(10 * time.Second), client.WithConnectTimeout(5 * time.Second)}, opts...)...)
}

// WithKitexHeaders adds transient metainfo values (TTHeader string
// key/values "RPC_TRANSIT_<key>") to ctx for a Kitex call.
func WithKitexHeaders(ctx context.Context, kv ...string) context.Context {
	for i := 0; i+1 < len(kv); i += 2 {
		ctx = metainfo.WithValue(ctx, kv[i], kv[i+1])
	}
	return ctx
}

// IsAppException reports whether err is a TApplicationException (Apache)
// or Kitex's equivalent, and returns its message.
func IsAppException(err error) (string, bool) {
	var ae thrift.TApplicationException
	if errors.As(err, &ae) {
		return ae.Error(), true
	}
	if err != nil && strings.Contains(err.Error(), "remote or network error[remote]") {
		return err.Error(), true
	}
	return "", false
}

// listener serves Apache Thrift on a listener the caller opened (so that
// the port is known before the server runs).
type listener struct {
	ln   net.Listener
	conf *thrift.TConfiguration
}

func (l *listener) Listen() error    { return nil }
func (l *listener) Close() error     { return l.ln.Close() }
func (l *listener) Interrupt() error { return l.ln.Close() }
func (l *listener) Accept() (thrift.TTransport, error) {
	c, err := l.ln.Accept()
	if err != nil {
		return nil, err
	}
	return thrift.NewTSocketFromConnConf(c, l.conf), nil
}

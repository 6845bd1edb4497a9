package nacos

import (
	"context"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/common/constant"
	"github.com/nacos-group/nacos-sdk-go/v2/common/http_agent"
	"github.com/nacos-group/nacos-sdk-go/v2/common/logger"
	"github.com/nacos-group/nacos-sdk-go/v2/common/nacos_server"
	"github.com/nacos-group/nacos-sdk-go/v2/common/remote/rpc"
	"github.com/nacos-group/nacos-sdk-go/v2/common/remote/rpc/rpc_request"
	"github.com/nacos-group/nacos-sdk-go/v2/inner/uuid"

	"github.com/breeze-mesh/breeze/registry/nacos/nacostest"
)

// sdkConnection is the SDK's own gRPC client (what a naming or config
// client runs on), connected to addr: its health check is the SDK's,
// unexported, so the test sends the same request through it.
func sdkConnection(t *testing.T, addr string) *rpc.RpcClient {
	t.Helper()
	host, portText, _ := net.SplitHostPort(addr)
	port, _ := strconv.ParseUint(portText, 10, 16)
	dir := t.TempDir()
	cc := *constant.NewClientConfig(constant.WithTimeoutMs(5000), constant.WithLogDir(dir), constant.WithCacheDir(dir),
		constant.WithLogLevel("error"))
	// What the SDK's clients do first: its logger into the test's directory.
	if err := logger.InitLogger(logger.BuildLoggerConfig(cc)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	server, err := nacos_server.NewNacosServer(ctx, []constant.ServerConfig{*constant.NewServerConfig(host, port)}, cc,
		&http_agent.HttpAgent{}, 5000, "")
	if err != nil {
		t.Fatal(err)
	}
	id, err := uuid.NewV4()
	if err != nil {
		t.Fatal(err)
	}
	c, err := rpc.CreateClient(ctx, "healthcheck-"+id.String(), rpc.GRPC,
		map[string]string{constant.LABEL_SOURCE: constant.LABEL_SOURCE_SDK, constant.LABEL_MODULE: constant.LABEL_MODULE_NAMING}, server)
	if err != nil {
		t.Fatal(err)
	}
	r := c.GetRpcClient()
	t.Cleanup(func() { r.Shutdown(); cancel() })
	r.Start()
	if !r.IsRunning() {
		t.Fatalf("the SDK's client did not connect to rnacos on %s", addr)
	}
	return r
}

// rnacos answers a health check without the "success" field the SDK
// reads; the SDK must still take it as healthy (healthcheck.go), or every
// idle client reconnects and its instances are dropped meanwhile.
func TestHealthCheckOfRnacosIsASuccess(t *testing.T) {
	ns := nacostest.Start(t)
	c := sdkConnection(t, ns.Addr)
	resp, err := c.Request(rpc_request.NewHealthCheckRequest(), constant.DEFAULT_TIMEOUT_MILLS)
	if err != nil {
		t.Fatalf("health check: %v", err)
	}
	if !resp.IsSuccess() {
		t.Fatalf("rnacos' answer to a health check (%T, resultCode %d, errorCode %d, %q) (as the SDK decoded it) is read as a failure: every idle SDK client would reconnect",
			resp, resp.GetResultCode(), resp.GetErrorCode(), resp.GetBody())
	}
}

// The symptom, through the SDK's own keep-alive: a client that sends
// nothing health-checks every KEEP_ALIVE_TIME (5 s, a constant of the
// SDK) and, were the answer a failure, would replace its connection, the
// server dropping the instances registered through it. Two periods and a
// margin without a disconnection (12 s).
func TestIdleSDKClientKeepsItsConnection(t *testing.T) {
	ns := nacostest.Start(t)
	c := sdkConnection(t, ns.Addr)
	var events connectionEvents
	c.RegisterConnectionListener(&events)
	over := time.After(2*constant.KEEP_ALIVE_TIME*time.Second + 2*time.Second)
	for range time.Tick(100 * time.Millisecond) {
		if n := events.disconnected.Load(); n > 0 {
			t.Fatalf("the idle client's connection was replaced (%d disconnections, %d connections) within %d s: its health check failed",
				n, events.connected.Load(), 2*constant.KEEP_ALIVE_TIME+2)
		}
		select {
		case <-over:
			return
		default:
		}
	}
}

type connectionEvents struct{ connected, disconnected atomic.Int32 }

func (e *connectionEvents) OnConnected()  { e.connected.Add(1) }
func (e *connectionEvents) OnDisConnect() { e.disconnected.Add(1) }

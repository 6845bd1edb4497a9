package proxy

import (
	"log/slog"
	"runtime"
	"testing"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"

	_ "github.com/breeze-mesh/breeze/codecs/dubbo"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// idleCallback stands for Envoy's side of a connection that never sends.
type idleCallback struct{}

func (idleCallback) StreamInfo() api.StreamInfo    { return nil }
func (idleCallback) Write([]byte, bool)            {}
func (idleCallback) Close(api.ConnectionCloseType) {}
func (idleCallback) EnableHalfClose(bool)          {}

// TestIdleConnectionMemory measures what the plugin itself holds per open,
// idle downstream connection inside Envoy (the filter, its codec, its idle
// timer): Envoy's own per-connection memory is C++'s and not counted, nor is
// the standalone host's (goroutines, buffers), which Envoy does not have.
// The bar is 10 KiB per connection at 10,000 connections.
func TestIdleConnectionMemory(t *testing.T) {
	p, err := New(&breezev1.ProxyConfig{
		StatPrefix: "mem", Codec: "dubbo", IdleTimeout: durationpb.New(3600e9),
		RouteConfig: &breezev1.RouteConfiguration{Routes: []*breezev1.Route{{Route: &breezev1.RouteAction{
			ClusterSpecifier: &breezev1.RouteAction_Cluster{Cluster: "c"}}}}},
		Clusters: []*breezev1.Cluster{{Name: "c", Endpoints: []*breezev1.Endpoint{{Address: "127.0.0.1", Port: 1}}}},
	}, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const n = 10000
	filters := make([]api.DownstreamFilter, n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range filters {
		f := p.CreateFilter(idleCallback{})
		f.OnNewConnection()
		filters[i] = f
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perConn := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("plugin heap per idle downstream connection: %.0f bytes (%d connections)", perConn, n)
	if perConn > 10*1024 {
		t.Errorf("%.0f bytes per idle connection, over the 10 KiB bar", perConn)
	}
	for _, f := range filters {
		f.OnEvent(api.RemoteClose)
	}
	runtime.KeepAlive(filters)
}

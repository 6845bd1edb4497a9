// Command fsprobe is a test plugin (go build -buildmode=c-shared) that reads
// the connection's filter state through internal/filterstate, for
// fakeenvoy to load: it proves the read path against the shim's real C API
// calls, which the Go host replaces. On each OnData it sets "mine" to
// "set-<peer>" with the shim's SetString and writes
// "<peer at OnNewConnection>|<peer now>|<mine>".
package main

import (
	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"
	"github.com/envoyproxy/envoy/contrib/golang/filters/network/source/go/pkg/network"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/breeze-mesh/breeze/internal/filterstate"
)

func init() {
	network.RegisterNetworkFilterConfigParser(parser{})
	network.RegisterNetworkFilterConfigFactory("breeze", factory{})
}

type parser struct{}

func (parser) ParseConfig(*anypb.Any) interface{} { return nil }

type factory struct{}

func (factory) CreateFactoryFromConfig(interface{}) network.FilterFactory { return factory{} }

func (factory) CreateFilter(cb api.ConnectionCallback) api.DownstreamFilter {
	return &probe{cb: cb}
}

type probe struct {
	cb    api.ConnectionCallback
	atNew string
}

func (p *probe) get(key string) string {
	v, err := filterstate.Get(p.cb, key)
	if err != nil {
		return "error: " + err.Error()
	}
	return v
}

func (p *probe) OnNewConnection() api.FilterStatus {
	p.atNew = p.get("peer")
	return api.NetworkFilterContinue
}

func (p *probe) OnData(b []byte, end bool) api.FilterStatus {
	p.cb.StreamInfo().FilterState().SetString("mine", "set-"+p.atNew, api.StateTypeMutable, api.LifeSpanConnection, api.None)
	p.cb.Write([]byte(p.atNew+"|"+p.get("peer")+"|"+p.get("mine")), false)
	return api.NetworkFilterContinue
}

func (p *probe) OnWrite(b []byte, end bool) api.FilterStatus { return api.NetworkFilterContinue }

func (p *probe) OnEvent(e api.ConnectionEvent) {}

func main() {}

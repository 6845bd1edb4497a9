package istiod

import (
	"fmt"

	golangv3alpha "github.com/envoyproxy/go-control-plane/contrib/envoy/extensions/filters/network/golang/v3alpha"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"

	"github.com/breeze-mesh/breeze/config"
	"github.com/breeze-mesh/breeze/deploy"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// BreezeFilter is Breeze's Go filter as found on a generated chain,
// decoded.
type BreezeFilter struct {
	// Chain is the chain's index in the listener, ChainName its name for
	// messages.
	Chain     int
	ChainName string
	// Before is the names of the chain's network filters ahead of it.
	Before []string
	// Golang is the Go filter's config, Proxy its plugin_config as
	// Breeze's plugin reads it (config.ParseAny).
	Golang *golangv3alpha.Config
	Proxy  *breezev1.ProxyConfig
}

// BreezeFilterOn is Breeze's filter on each chain of l that m selects and
// that has one; an error when a Go filter there does not decode as Breeze's.
func BreezeFilterOn(l *listenerv3.Listener, m ChainMatch) ([]BreezeFilter, error) {
	var out []BreezeFilter
	for i, fc := range l.GetFilterChains() {
		if !m.matches(fc) {
			continue
		}
		for j, f := range fc.GetFilters() {
			if f.GetName() != deploy.GolangFilterName {
				continue
			}
			gc, pc, err := decodeBreeze(f)
			if err != nil {
				return nil, fmt.Errorf("listener %s %s filter %d: %w", l.GetName(), chainName(i, fc), j, err)
			}
			out = append(out, BreezeFilter{
				Chain: i, ChainName: chainName(i, fc), Before: NetworkFilterNames(fc)[:j],
				Golang: gc, Proxy: pc,
			})
		}
	}
	return out, nil
}

// decodeBreeze unpacks a Go network filter and its plugin_config.
func decodeBreeze(f *listenerv3.Filter) (*golangv3alpha.Config, *breezev1.ProxyConfig, error) {
	gc := &golangv3alpha.Config{}
	if err := f.GetTypedConfig().UnmarshalTo(gc); err != nil {
		return nil, nil, fmt.Errorf("typed_config %s: %w", f.GetTypedConfig().GetTypeUrl(), err)
	}
	pc, err := config.ParseAny(gc.GetPluginConfig())
	if err != nil {
		return nil, nil, fmt.Errorf("plugin_config: %w", err)
	}
	return gc, pc, nil
}

// GolangFiltersIn is where a listener has a Go network filter at all:
// "chain i filter j" for each.
func GolangFiltersIn(l *listenerv3.Listener) []string {
	var out []string
	for i, fc := range l.GetFilterChains() {
		for j, f := range fc.GetFilters() {
			if f.GetName() == deploy.GolangFilterName {
				out = append(out, fmt.Sprintf("%s filter %d", chainName(i, fc), j))
			}
		}
	}
	return out
}

// NetworkRBAC is the config of an envoy.filters.network.rbac filter.
func NetworkRBAC(f *listenerv3.Filter) (*rbacv3.RBAC, error) {
	r := &rbacv3.RBAC{}
	if err := f.GetTypedConfig().UnmarshalTo(r); err != nil {
		return nil, fmt.Errorf("%s: typed_config %s: %w", f.GetName(), f.GetTypedConfig().GetTypeUrl(), err)
	}
	return r, nil
}

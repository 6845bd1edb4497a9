package config

import (
	"errors"
	"fmt"

	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// errConnectTimeout says why clusters[].connect_timeout is deprecated and
// what to do instead.
var errConnectTimeout = errors.New("deprecated and ignored: Envoy's plainText cluster sets the connect timeout of every upstream connection Breeze opens (breeze run: 5s); set connect_timeout on the plainText cluster instead, and remove this field")

// Warnings lists what a ProxyConfig sets that is accepted but has no
// effect, such as a deprecated field: configs that set it still load, but
// should change. Each warning reads like one of Validate's errors, naming
// the field path and the value:
//
//	clusters[1].connect_timeout: 1s: deprecated and ignored: ...
//
// It does not validate: call Validate first. nil means nothing to report.
func Warnings(cfg *breezev1.ProxyConfig) []string {
	return warningStrings(FieldWarnings(cfg))
}

// FieldWarnings returns what Warnings reports, as FieldErrors, for callers
// that put the paths under their own (breeze validate names them by their
// place in the file).
func FieldWarnings(cfg *breezev1.ProxyConfig) []*FieldError {
	return proxyWarnings("", cfg)
}

// RunnerWarnings returns Warnings for the proxy of every listener of a
// runner config, paths prefixed "listeners[i].proxy." as ParseRunner's
// errors are.
func RunnerWarnings(r *breezev1.Runner) []string {
	var ws []*FieldError
	for i, l := range r.GetListeners() {
		ws = append(ws, proxyWarnings(fmt.Sprintf("listeners[%d].proxy.", i), l.GetProxy())...)
	}
	return warningStrings(ws)
}

func proxyWarnings(prefix string, cfg *breezev1.ProxyConfig) []*FieldError {
	var ws []*FieldError
	for i, cl := range cfg.GetClusters() {
		if d := cl.GetConnectTimeout(); d != nil {
			ws = append(ws, &FieldError{
				Path:  fmt.Sprintf("%sclusters[%d].connect_timeout", prefix, i),
				Value: d.AsDuration().String(),
				Err:   errConnectTimeout,
			})
		}
	}
	return ws
}

func warningStrings(ws []*FieldError) []string {
	if len(ws) == 0 {
		return nil
	}
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.Error()
	}
	return out
}

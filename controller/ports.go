package controller

import (
	"fmt"
	"strings"
)

// Port naming, as Aeraki reads it, with Istio's precedence: a port is
// Breeze's when
//
//   - its appProtocol is <protocol> or tcp-metaprotocol-<protocol>[-anything];
//   - or, without an appProtocol, its name is
//     tcp-metaprotocol-<protocol>[-anything] (Aeraki's MetaProtocol
//     naming), or tcp-dubbo[-anything] / tcp-thrift[-anything] (Aeraki's
//     older naming for its dedicated Dubbo and Thrift filters).
//
// appProtocol comes first because istiod reads it first (its
// ConvertProtocol): a port named tcp-metaprotocol-dubbo-x with appProtocol
// http gets an HTTP listener, where Breeze's patch of tcp_proxy would
// match nothing.
//
// <protocol> is Breeze's codec of that name, or the protocol of an Aeraki
// ApplicationProtocol whose codec names one.
const metaprotocolPrefix = "tcp-metaprotocol-"

// legacyProtocols are Aeraki's port name prefixes from before
// MetaProtocol: tcp-dubbo-..., tcp-thrift-....
var legacyProtocols = []string{"dubbo", "thrift"}

// portProtocol returns the protocol a port's appProtocol (else its name)
// asks for, and whether it asks for one at all. declared: it says
// MetaProtocol explicitly, so a protocol Breeze has no codec for is an
// error to report (an appProtocol of "http" is simply not Breeze's).
func portProtocol(name, appProtocol string) (protocol string, declared bool) {
	if appProtocol != "" {
		if rest, ok := strings.CutPrefix(appProtocol, metaprotocolPrefix); ok {
			p, _, _ := strings.Cut(rest, "-")
			return p, true
		}
		return appProtocol, false
	}
	return nameProtocol(name)
}

// nameProtocol is the protocol a port's name alone asks for.
func nameProtocol(name string) (protocol string, declared bool) {
	if rest, ok := strings.CutPrefix(name, metaprotocolPrefix); ok {
		p, _, _ := strings.Cut(rest, "-")
		return p, true
	}
	for _, p := range legacyProtocols {
		if name == "tcp-"+p || strings.HasPrefix(name, "tcp-"+p+"-") {
			return p, true
		}
	}
	return "", false
}

// overriddenName reports whether a port's name asks for MetaProtocol but
// its appProtocol, which Istio (and so the controller) follows, makes it
// something else: worth telling the Service's owner.
func (r codecResolver) overriddenName(name, appProtocol string) bool {
	if appProtocol == "" {
		return false
	}
	if _, declared := nameProtocol(name); !declared {
		return false
	}
	c, err := r.codec(name, appProtocol)
	return c == "" && err == nil
}

// codecResolver maps a port's protocol to a Breeze codec.
type codecResolver struct {
	// known reports whether Breeze has a codec of that name.
	known func(string) bool
	// appProtocols: Aeraki ApplicationProtocols, protocol → codec name
	// as Aeraki writes it (aeraki.meta_protocol.codec.dubbo).
	appProtocols map[string]string
}

// codec returns the Breeze codec of a port, "" when the port is not
// Breeze's, and an error when it asks for MetaProtocol with a protocol
// Breeze has no codec for.
func (r codecResolver) codec(name, appProtocol string) (string, error) {
	protocol, declared := portProtocol(name, appProtocol)
	if protocol == "" {
		return "", nil
	}
	if c, ok := r.appProtocols[protocol]; ok {
		// Aeraki's codec names end with the codec's own name.
		codec := c[strings.LastIndexByte(c, '.')+1:]
		if r.known(codec) {
			return codec, nil
		}
		if declared {
			return "", fmt.Errorf("protocol %q: ApplicationProtocol names codec %q, which Breeze does not have", protocol, c)
		}
		return "", nil
	}
	if r.known(protocol) {
		return protocol, nil
	}
	if declared {
		return "", fmt.Errorf("protocol %q: Breeze has no such codec (and no ApplicationProtocol declares it)", protocol)
	}
	return "", nil
}

// serviceEntryPortCodec is codec for a ServiceEntry's port. Istio builds a
// ServiceEntry port's listener from its protocol field, not its name: a
// port named tcp-metaprotocol-dubbo-x with protocol HTTP gets Istio's HTTP
// listener, so only TCP (or an unset protocol, which Istio sniffs, with a
// TCP chain for what is not HTTP) leaves Breeze a tcp_proxy to replace.
// overridden: the name asks for MetaProtocol, the protocol says otherwise.
func (r codecResolver) serviceEntryPortCodec(name, protocol string) (codec string, overridden bool, err error) {
	if protocol != "" && !strings.EqualFold(protocol, "TCP") {
		_, declared := nameProtocol(name)
		return "", declared, nil
	}
	c, err := r.codec(name, "")
	return c, false, err
}

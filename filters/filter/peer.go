package filter

import (
	"net/netip"
	"strings"
)

// Peer is the caller at the other end of a request's downstream
// connection, as the connection established it: never anything the
// request itself says.
type Peer struct {
	// Principal is the caller's mTLS identity in Istio's form,
	// "<trust-domain>/ns/<namespace>/sa/<service-account>" (its SPIFFE URI
	// SAN without "spiffe://"); "" when the connection carries none.
	Principal string
	// Namespace is the namespace part of Principal, "" when it has none.
	Namespace string
	// IP is the downstream peer's address; invalid when unknown.
	IP netip.Addr
	// IdentityKnown says the connection's chain hands Breeze the caller's
	// certificate (IdentityHookKey was set): an empty Principal then
	// means the caller has none (plaintext). When false, Principal is
	// empty because nothing could tell: policies on the caller's identity
	// must not read that as "no identity" (see filters/authz).
	IdentityKnown bool
	// Addr is its address and port, for the access log
	// (%DOWNSTREAM_REMOTE_ADDRESS%); invalid when unknown.
	Addr netip.AddrPort
}

// IdentityHookKey is the filter-state key that the set_filter_state filter
// which hands Breeze the caller's certificate also sets, to any non-empty
// value, on every connection it sees (on_new_connection), so that Breeze
// can tell "the caller has no certificate" from "nothing here would have
// told". breeze render and the controller put both on inbound chains.
const IdentityHookKey = "io.breeze.peer_identity_hook"

// PeerReader is implemented by a filter that reads Stream.Peer. The proxy
// then reads the caller's identity once per downstream connection, when
// it opens, from the string Envoy keeps in the connection's filter state
// under PeerPrincipalKey (what a set_filter_state filter before Breeze
// stored from %DOWNSTREAM_PEER_URI_SAN%), and its address. Without such a
// filter in the chain nothing is read: the read costs a call into Envoy.
type PeerReader interface {
	PeerPrincipalKey() string
}

// ParsePeerURI turns a certificate URI SAN into Istio's principal and
// namespace: "spiffe://td/ns/ns1/sa/sa1" is principal "td/ns/ns1/sa/sa1",
// namespace "ns1". Anything else, several SANs (Envoy joins them with
// ',') included, is no identity at all (ok false): a principal rule must
// not match a value it was not written for.
func ParsePeerURI(uri string) (principal, namespace string, ok bool) {
	rest, found := strings.CutPrefix(uri, "spiffe://")
	if !found || rest == "" || strings.ContainsAny(rest, ", ") {
		return "", "", false
	}
	td, path, _ := strings.Cut(rest, "/")
	if td == "" {
		return "", "", false
	}
	// Kubernetes' workload identities: ns/<ns>/sa/<sa>.
	if ns, sa, found := strings.Cut(strings.TrimPrefix(path, "ns/"), "/sa/"); strings.HasPrefix(path, "ns/") && found &&
		ns != "" && sa != "" && !strings.Contains(ns, "/") && !strings.Contains(sa, "/") {
		namespace = ns
	}
	return rest, namespace, true
}

package logs

// Fields are the keys of the log lines of Breeze's filter (every package
// under filters/), with what each names. A thing has one key everywhere:
// one query (cluster=reviews, endpoint=10.0.0.7:20880) finds every line
// about it, in text or JSON. TestFieldNames holds the lines to this list;
// a new key is added here, with its meaning, or an existing one is used.
var Fields = []struct{ Key, Means string }{
	// Where.
	{"proxy", "the proxy config, by its stat_prefix (as the metrics' proxy label)"},
	{"route", "the name of the route the request matched"},
	{"cluster", "a cluster, by name"},
	{"endpoint", "an upstream endpoint, ip:port"},
	{"remote", "the client's address, ip:port"},
	{"host", "a host name a STRICT_DNS cluster resolves"},
	{"filter", "an L7 filter, by its registered name"},
	{"codec", "a proxy's codec, by its registered name"},
	{"address", "an address the process listens on, host:port (the plugin's metrics server)"},
	{"serving_on", "the address the process's metrics server already serves on, when a config names another"},
	{"path", "an HTTP path the metrics server serves"},
	{"filter_state_key", "the key of a connection's filter state Breeze reads (the caller's identity)"},
	{"identity", "a caller's identity as it came (a URI SAN such as spiffe://td/ns/x/sa/y)"},
	{"access_log", "an access log's destination: its path (access_log[].path), /dev/stdout or /dev/stderr"},
	// What a request asked for, and how it ended.
	{"service", "the service a request called (codecs.Describe)"},
	{"method", "the method a request called (codecs.Describe)"},
	{"id", "the request id, as the client sent it"},
	{"flags", "Envoy's response flags: NR, UH, UF, UO, URX, UT, UC, DC, DI, FI, RL, UAEX, IE, comma-separated"},
	{"detail", "the text of the error reply the client got"},
	{"status", "a response status in the protocol's own numbers (codecs.Message.Code: Dubbo's status byte, Thrift's TApplicationException type)"},
	// Why.
	{"reason", "why, as a token from a fixed set: the value of the matching metric's reason label where there is one"},
	{"err", "the error, as text (for a failed connect, the OS's: connection refused)"},
	{"suppressed", "lines of the same reason left out since the last one written (this package)"},
	{"where", "the place a panic was recovered, as breeze_panics_total{where} names it"},
	{"panic", "a recovered panic's value"},
	{"stack", "a recovered panic's stack"},
	// Upstream state.
	{"ejected_for", "how long an endpoint gets no new requests"},
	{"ejections", "an endpoint's ejection multiplier: how many times outlier detection ejected it, less its healthy intervals"},
	{"ejected", "how many endpoints of a cluster or subset are ejected now"},
	{"subset", "a subset of a cluster, by its name (a DestinationRule subset)"},
	{"failures", "the failed attempts of an outage that just ended"},
	{"in_flight", "requests in flight on a connection"},
	{"queued", "bytes written to an upstream connection and not yet taken by its peer"},
	{"lines", "how many access log lines one failed write lost"},
	{"event", "an Envoy connection event: RemoteClose, LocalClose"},
	{"idle", "how long a connection had been idle"},
	{"idle_timeout", "an upstream's idle timeout, as learned from its closes"},
	{"keepalive", "the heartbeat period of an endpoint's connections"},
	// Config and xDS.
	{"max_requests_in_flight", "the config's limit of that name"},
	{"route_config", "an xDS route table, by name"},
	{"routes", "how many routes a table has"},
	{"endpoints", "how many endpoints an update gave a cluster"},
	{"eds_service_name", "the EDS service name a cluster's endpoints come from"},
	{"type", "a cluster's discovery type"},
	{"lb_policy", "a cluster's load-balancing policy"},
	{"xds_node", "the node id the proxy subscribes with"},
	{"xds_server", "the xDS server's address"},
	{"initial_fetch_timeout", "how long the proxy waits for its first xDS resources"},
	{"waited", "how long a route table waited for its clusters"},
	{"missing", "the clusters a route table still waited for"},
}

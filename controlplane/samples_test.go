package controlplane

import (
	"strings"
	"testing"
	"time"

	metaprotocolv1alpha1 "github.com/aeraki-mesh/api/metaprotocol/v1alpha1"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/route"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// Samples as Aeraki and Istio publish them, verbatim (license headers
// dropped). Aeraki: github.com/aeraki-mesh/aeraki at 56e4de0; Istio:
// istio.io/api networking/v1alpha3/destination_rule.proto.

// demo/metaprotocol-dubbo/metarouter-global-ratelimit.yaml
const aerakiGlobalRateLimit = `---
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata:
  name: test-metaprotocol-dubbo-route
  namespace: meta-dubbo
spec:
  hosts:
    - org.apache.dubbo.samples.basic.api.demoservice
  globalRateLimit:
    domain: production
    match:
      attributes:
        method:
          exact: sayHello
    rateLimitService: outbound|8081||rate-limit-server.meta-dubbo.svc.cluster.local
    requestTimeout: 100ms
    denyOnFail: true
    descriptors:
    - property: method
      descriptorKey: method
`

// demo/metaprotocol-thrift/outlier-detection/outlier-detection.yaml (its
// Deployment is skipped: not a kind the control plane reads).
const aerakiOutlierDetection = `---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: thrift-sample-server-fake
  namespace: meta-thrift
  labels:
    app: thrift-sample-server
spec:
  selector:
    matchLabels:
      app: thrift-sample-server
  replicas: 1
  template:
    metadata:
      annotations:
        sidecar.istio.io/bootstrapOverride: aeraki-bootstrap-config
        sidecar.istio.io/proxyImage: ghcr.io/aeraki-mesh/meta-protocol-proxy:1.4.2
        sidecar.istio.io/rewriteAppHTTPProbers: "false"
      labels:
        app: thrift-sample-server
    spec:
      containers:
        - name: thrift-sample-server
          image: nginx
          ports:
            - containerPort: 9090
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: thrift-sample-server
  namespace: meta-thrift
spec:
  host: thrift-sample-server.meta-thrift.svc.cluster.local
  trafficPolicy:
    outlierDetection:
      baseEjectionTime: 15m
      consecutive5xxErrors: 5
      interval: 5m
`

// Istio's connection pool example (ConnectionPoolSettings).
const istioRedisPool = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: bookinfo-redis
spec:
  host: myredissrv.prod.svc.cluster.local
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 100
        connectTimeout: 30ms
        tcpKeepalive:
          time: 7200s
          interval: 75s
`

// Durations as Istio and Aeraki write them (100ms, 15m, 30ms) are read
// like protobuf's 1.5s: the samples load without errors, with their values.
func TestSamplesWithGoDurations(t *testing.T) {
	d := dir(t, map[string]string{
		"se.yaml": entry("org.apache.dubbo.samples.basic.api.demoservice", 20880) + "---\n" +
			entry("thrift-sample-server.meta-thrift.svc.cluster.local", 9090) + "---\n" +
			entry("myredissrv.prod.svc.cluster.local", 6379),
		"ratelimit.yaml": aerakiGlobalRateLimit,
		"outlier.yaml":   aerakiOutlierDetection,
		"redis.yaml":     istioRedisPool,
	})
	src := &DirSource{Dir: d, Log: quiet}
	snap := src.Read()
	for _, p := range append(snap.Problems, Translate(snap.Objects).Problems...) {
		if !p.Warning {
			t.Errorf("error: %s", strings.ReplaceAll(p.Error(), d+"/", ""))
		}
	}
	got := map[string]time.Duration{}
	for _, o := range snap.Objects {
		switch s := o.Spec.(type) {
		case *metaprotocolv1alpha1.MetaRouter:
			got["requestTimeout"] = s.GetGlobalRateLimit().GetRequestTimeout().AsDuration()
		case *networkingv1alpha3.DestinationRule:
			if od := s.GetTrafficPolicy().GetOutlierDetection(); od != nil {
				got["baseEjectionTime"] = od.GetBaseEjectionTime().AsDuration()
				got["interval"] = od.GetInterval().AsDuration()
			}
			if tcp := s.GetTrafficPolicy().GetConnectionPool().GetTcp(); tcp != nil {
				got["connectTimeout"] = tcp.GetConnectTimeout().AsDuration()
				got["tcpKeepalive.time"] = tcp.GetTcpKeepalive().GetTime().AsDuration()
			}
		}
	}
	want := map[string]time.Duration{
		"requestTimeout": 100 * time.Millisecond, "baseEjectionTime": 15 * time.Minute, "interval": 5 * time.Minute,
		"connectTimeout": 30 * time.Millisecond, "tcpKeepalive.time": 2 * time.Hour,
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: got %v, want %v", k, got[k], w)
		}
	}
}

// A MetaRouter without routes (Aeraki's global rate limit sample) leaves
// its host the default route, as Aeraki does, rather than a table where
// every request finds no route; its globalRateLimit applies to that route.
func TestMetaRouterWithoutRoutesKeepsTheDefaultRoute(t *testing.T) {
	const host = "org.apache.dubbo.samples.basic.api.demoservice"
	d := dir(t, map[string]string{
		"se.yaml":        entry(host, 20880),
		"ratelimit.yaml": aerakiGlobalRateLimit,
		"dr.yaml": `apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: dubbo-sample-provider, namespace: meta-dubbo}
spec:
  host: org.apache.dubbo.samples.basic.api.demoservice
  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: method}}}
`,
	})
	tr, problems := read(t, d)
	if len(problems) > 0 {
		t.Fatalf("problems:\n%s", strings.Join(problemStrings(problems), "\n"))
	}
	var want breezev1.RouteConfiguration
	fromYAML(t, `{name: org.apache.dubbo.samples.basic.api.demoservice_20880, routes: [{name: default, route: {cluster: "outbound|20880||org.apache.dubbo.samples.basic.api.demoservice", hash_key: method},
  typed_per_filter_config: {global_ratelimit: {"@type": type.googleapis.com/breeze.filters.global_ratelimit.v1.GlobalRateLimit, `+aerakiGlobalRateLimitConfig+`}}}]}`, &want)
	rc := tr.Resources.Routes[host+"_20880"]
	equal(t, "routes", rc, &want)
	table, err := route.Compile(rc)
	if err != nil {
		t.Fatal(err)
	}
	if r := table.Match(codecs.Metadata{{Key: "method", Value: "sayHello"}}); r == nil || r.RouteName() != "default" {
		t.Fatalf("a call matched %v, want the default route", r)
	}
}

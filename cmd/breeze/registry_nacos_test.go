package main

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/nacos-group/nacos-sdk-go/v2/clients"
	"github.com/nacos-group/nacos-sdk-go/v2/common/constant"
	"github.com/nacos-group/nacos-sdk-go/v2/vo"

	"github.com/breeze-mesh/breeze/registry/nacos/nacostest"
	"github.com/breeze-mesh/breeze/registry/zookeeper/zktest"
)

// breeze registry export -zookeeper -nacos: an interface with a provider
// in each registry is one ServiceEntry with both endpoints.
func TestRegistryExportZooKeeperAndNacos(t *testing.T) {
	zs := zktest.Start(t)
	ns := nacostest.Start(t)
	conn, _, err := zk.Connect([]string{zs.Addr}, 10*time.Second, zk.WithLogger(quietZK{}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	registerProvider(t, conn, "org.breeze.Greeter", "10.0.0.1:20880")

	host, portText, _ := net.SplitHostPort(ns.Addr)
	port, _ := strconv.ParseUint(portText, 10, 16)
	dir := t.TempDir()
	naming, err := clients.NewNamingClient(vo.NacosClientParam{
		ClientConfig: constant.NewClientConfig(constant.WithLogDir(dir), constant.WithCacheDir(dir),
			constant.WithNotLoadCacheAtStart(true), constant.WithLogLevel("error")),
		ServerConfigs: []constant.ServerConfig{*constant.NewServerConfig(host, port)},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer naming.CloseClient()
	// The bool is false with rnacos though it registered: its replies lack
	// the "success" field the Go SDK reads (see registry/README.md).
	_, err = naming.RegisterInstance(vo.RegisterInstanceParam{Ip: "10.0.0.2", Port: 20880, Weight: 1, Enable: true, Healthy: true, Ephemeral: true,
		ServiceName: "providers:org.breeze.Greeter:1.0.0:",
		Metadata:    map[string]string{"interface": "org.breeze.Greeter", "version": "1.0.0", "side": "provider", "protocol": "dubbo", "category": "providers"}})
	if err != nil {
		t.Fatalf("register in Nacos: %v", err)
	}

	stdout, stderr, code := breeze(t, "registry", "export", "-zookeeper", zs.Addr, "-nacos", ns.Addr, "-log-level", "error")
	if code != 0 {
		t.Fatalf("breeze registry export: exit %d, stderr %q", code, stderr)
	}
	if n := strings.Count(stdout, "kind: ServiceEntry"); n != 1 {
		t.Errorf("%d ServiceEntries, want 1:\n%s", n, stdout)
	}
	for _, want := range []string{"address: 10.0.0.1", "address: 10.0.0.2", "category: providers"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("export lacks %q:\n%s", want, stdout)
		}
	}
}

package org.breeze.e2e;

import com.google.gson.Gson;

import java.net.InetSocketAddress;
import java.net.Socket;
import java.util.HashMap;
import java.util.Map;
import java.util.TreeMap;

import org.apache.dubbo.config.ApplicationConfig;
import org.apache.dubbo.config.ProtocolConfig;
import org.apache.dubbo.config.RegistryConfig;
import org.apache.dubbo.config.ServiceConfig;
import org.apache.dubbo.config.bootstrap.DubboBootstrap;
import org.apache.dubbo.rpc.RpcContext;
import org.breeze.Greeter;

/**
 * Serves org.breeze.Greeter with Apache Dubbo Java over dubbo://127.0.0.1:PORT,
 * hessian2, no registry, and prints "READY PORT" once it accepts connections.
 *
 * <pre>
 * JavaProvider --port 20001 --name java-v1 [--version 1.0.0] [--heartbeat MS] [--shutdown-wait MS]
 *              [--zookeeper HOST:PORT --register-mode interface|instance|all --application NAME
 *               --metadata-type local|remote --session MS]
 * </pre>
 *
 * <p>With --zookeeper it registers through Dubbo's own ZooKeeper registry
 * (Curator), with ZooKeeper as its metadata report too.
 *
 * <p>Each Slow call prints "START Slow MS" when it begins and "END Slow MS" when
 * it returns, so that a test can wait for calls to be in flight. SIGTERM runs
 * Dubbo's own graceful shutdown (READONLY events to every connection, then it
 * waits up to --shutdown-wait for its clients to disconnect) and prints
 * "STOPPED" when Dubbo is done.
 */
public final class JavaProvider {
    private static final Gson GSON = new Gson();

    /** The Greeter of one provider process. */
    static final class Impl implements Greeter {
        private final String name;
        private final String version;

        Impl(String name, String version) {
            this.name = name;
            this.version = version;
        }

        @Override
        public String Greet(String arg) {
            return reply("Greet", arg);
        }

        @Override
        public String Slow(int ms) {
            Peers.println("START Slow " + ms);
            try {
                Thread.sleep(ms);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            Peers.println("END Slow " + ms);
            return reply("Slow", Integer.toString(ms));
        }

        @Override
        public String Whoami() {
            return reply("Whoami", "");
        }

        @Override
        public Map<String, Object> Mirror(Object value) {
            Map<String, Object> r = new HashMap<>();
            r.put("provider", name);
            r.put("version", version);
            r.put("method", "Mirror");
            r.put("value", value);
            r.put("attachments", attachments());
            return r;
        }

        private static Map<String, String> attachments() {
            Map<String, String> att = new TreeMap<>();
            for (Map.Entry<String, Object> e :
                    RpcContext.getServerAttachment().getObjectAttachments().entrySet()) {
                att.put(e.getKey(), String.valueOf(e.getValue()));
            }
            return att;
        }

        private String reply(String method, String arg) {
            Map<String, String> att = attachments();
            Map<String, Object> r = new TreeMap<>();
            r.put("provider", name);
            r.put("version", version);
            r.put("method", method);
            r.put("arg", arg);
            r.put("attachments", att);
            return GSON.toJson(r);
        }
    }

    public static void main(String[] args) throws Exception {
        Map<String, String> f = Peers.flags(args);
        Peers.quietLogging();
        Peers.pinLoopback();
        int port = Integer.parseInt(f.getOrDefault("port", "20880"));
        String name = f.getOrDefault("name", "java-" + port);
        String version = f.getOrDefault("version", "");
        // Dubbo's graceful shutdown waits this long at most for clients to leave.
        System.setProperty("dubbo.service.shutdown.wait", f.getOrDefault("shutdown-wait", "10000"));

        String zookeeper = f.getOrDefault("zookeeper", "");
        ApplicationConfig app = new ApplicationConfig(f.getOrDefault("application", "breeze-e2e-java-provider"));
        app.setQosEnable(false); // else every JVM wants port 22222
        app.setRegisterMode(f.getOrDefault("register-mode", "interface"));
        app.setMetadataType(f.getOrDefault("metadata-type", "local"));

        ProtocolConfig proto = new ProtocolConfig("dubbo", port);
        proto.setHost("127.0.0.1");
        proto.setSerialization("hessian2");
        proto.setPreferSerialization("hessian2");
        if (f.containsKey("heartbeat")) {
            proto.setHeartbeat(Integer.parseInt(f.get("heartbeat")));
        }

        ServiceConfig<Greeter> svc = new ServiceConfig<>();
        svc.setInterface(Greeter.class);
        svc.setRef(new Impl(name, version));
        if (!version.isEmpty()) {
            svc.setVersion(version);
        }
        svc.setRegister(!zookeeper.isEmpty());
        RegistryConfig registry = new RegistryConfig(RegistryConfig.NO_AVAILABLE);
        if (!zookeeper.isEmpty()) {
            registry = new RegistryConfig("zookeeper://" + zookeeper);
            // The ZooKeeper session: how long a killed provider's nodes outlive it.
            registry.setSession(Integer.parseInt(f.getOrDefault("session", "60000")));
        }

        Runtime.getRuntime().addShutdownHook(new Thread(() -> Peers.println("SIGNALLED"), "breeze-signalled"));
        DubboBootstrap boot = DubboBootstrap.getInstance()
                .application(app)
                .registry(registry)
                .protocol(proto)
                .service(svc)
                .start();
        waitAccepting(port);
        Peers.println("READY " + port);
        boot.await();
        Peers.println("STOPPED");
    }

    private static void waitAccepting(int port) throws InterruptedException {
        long deadline = System.currentTimeMillis() + 10_000;
        while (true) {
            try (Socket s = new Socket()) {
                s.connect(new InetSocketAddress("127.0.0.1", port), 1000);
                return;
            } catch (java.io.IOException e) {
                if (System.currentTimeMillis() > deadline) {
                    throw new IllegalStateException("not listening on port " + port, e);
                }
                Thread.sleep(20);
            }
        }
    }
}

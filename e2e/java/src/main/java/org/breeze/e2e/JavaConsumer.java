package org.breeze.e2e;

import com.google.gson.Gson;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;

import org.apache.dubbo.common.utils.PojoUtils;
import org.apache.dubbo.config.ApplicationConfig;
import org.apache.dubbo.config.ReferenceConfig;
import org.apache.dubbo.config.RegistryConfig;
import org.apache.dubbo.config.bootstrap.DubboBootstrap;
import org.apache.dubbo.rpc.RpcContext;
import org.apache.dubbo.rpc.RpcException;
import org.apache.dubbo.rpc.service.GenericService;
import org.breeze.Greeter;

/**
 * Calls org.breeze.Greeter with Apache Dubbo Java for calls read as JSON lines on
 * stdin, one JVM for many calls, many at once:
 *
 * <pre>
 * {"id":1,"addr":"127.0.0.1:20880","method":"Greet","arg":"x","attachments":{"k":"v"},
 *  "generic":true,"timeout":3000,"version":""}
 * </pre>
 *
 * <p>Each call is answered, in any order, by a line
 * {@code RESULT {"id":1,"reply":"...","error":"...","error_class":"...","code":2,"causes":[...],"ms":3,
 * "response_attachments":{"k":"v"}}}.
 * It prints "READY serve" once Dubbo has started.
 *
 * <p>A reference is made per (addr, generic, timeout, version) on first use, with a
 * direct {@code dubbo://addr} URL, hessian2, failfast, no retries, no registry.
 * Dubbo shares one connection per address among them. Generic calls go out as
 * {@code $invoke(method, types, args)}; typed ones through the Greeter interface.
 * A method other than Greet/Slow/Whoami can only be called generically (with
 * one String argument).
 *
 * <pre>
 * JavaConsumer [--heartbeat MS]   # Dubbo's client heartbeat period (default 60000)
 * </pre>
 */
public final class JavaConsumer {
    private static final Gson GSON = new Gson();

    /** One input line. */
    static final class Call {
        long id;
        String addr;
        String method;
        String arg = "";
        Map<String, String> attachments;
        Boolean generic;
        Integer timeout;
        String version;
    }

    /** One output line, after "RESULT ". */
    static final class Result {
        long id;
        String reply;
        String error;
        String error_class;
        Integer code; // RpcException.getCode()
        List<String> causes; // the classes of the cause chain, outermost first
        long ms;
        Map<String, String> response_attachments; // what the provider (or a proxy) attached to the response
    }

    private static final Map<String, Object> REFS = new ConcurrentHashMap<>();
    private static String heartbeat;

    public static void main(String[] args) throws Exception {
        Map<String, String> f = Peers.flags(args);
        Peers.quietLogging();
        Peers.pinLoopback();
        heartbeat = f.get("heartbeat");

        ApplicationConfig app = new ApplicationConfig("breeze-e2e-java-consumer");
        app.setQosEnable(false);
        DubboBootstrap.getInstance()
                .application(app)
                .registry(new RegistryConfig(RegistryConfig.NO_AVAILABLE))
                .start();
        Peers.println("READY serve");

        ExecutorService pool = Executors.newCachedThreadPool(r -> {
            Thread t = new Thread(r, "breeze-call");
            t.setDaemon(true);
            return t;
        });
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            if (line.isBlank()) {
                continue;
            }
            Call c;
            try {
                c = GSON.fromJson(line, Call.class);
            } catch (RuntimeException e) {
                Result r = new Result();
                r.id = -1;
                r.error = "bad call line: " + e;
                emit(r);
                continue;
            }
            pool.execute(() -> emit(call(c)));
        }
        pool.shutdown();
        pool.awaitTermination(30, TimeUnit.SECONDS);
        System.exit(0);
    }

    private static void emit(Result r) {
        Peers.println("RESULT " + GSON.toJson(r));
    }

    private static Result call(Call c) {
        Result r = new Result();
        r.id = c.id;
        boolean generic = c.generic == null || c.generic;
        int timeout = c.timeout == null ? 3000 : c.timeout;
        String version = c.version == null ? "" : c.version;
        Object ref;
        try {
            ref = reference(c.addr, generic, timeout, version);
        } catch (RuntimeException e) {
            fail(r, e);
            return r;
        }
        RpcContext.removeClientAttachment();
        if (c.attachments != null) {
            for (Map.Entry<String, String> e : c.attachments.entrySet()) {
                RpcContext.getClientAttachment().setAttachment(e.getKey(), e.getValue());
            }
        }
        long start = System.nanoTime();
        try {
            if ("Mirror".equals(c.method)) {
                r.reply = mirror(ref, generic, c.arg);
                return r;
            }
            Object out = generic ? invokeGeneric((GenericService) ref, c) : invokeTyped((Greeter) ref, c);
            r.reply = String.valueOf(out);
            r.response_attachments = new HashMap<>();
            for (Map.Entry<String, Object> e : RpcContext.getServerContext().getObjectAttachments().entrySet()) {
                r.response_attachments.put(e.getKey(), String.valueOf(e.getValue()));
            }
        } catch (Throwable e) {
            fail(r, e);
        } finally {
            r.ms = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start);
            RpcContext.removeClientAttachment();
        }
        return r;
    }

    /**
     * Sends Peers.richValue(seed) to Mirror and compares what came back with it.
     * The reply is a Greeter-style JSON whose "arg" is the seed if the value came
     * back intact, else "MISMATCH" with both canonical texts. Generic calls carry
     * POJOs as maps (Dubbo's PojoUtils.generalize), so both sides are compared
     * generalized.
     */
    private static String mirror(Object ref, boolean generic, String seed) {
        Object sent = Peers.richValue(seed);
        Object out = generic
                ? ((GenericService) ref).$invoke("Mirror", new String[] {"java.lang.Object"}, new Object[] {sent})
                : ((Greeter) ref).Mirror(sent);
        if (!(out instanceof Map)) {
            throw new IllegalStateException("Mirror returned " + (out == null ? "null" : out.getClass().getName()));
        }
        Map<?, ?> m = (Map<?, ?>) out;
        String want = Peers.canon(generic ? PojoUtils.generalize(sent) : sent);
        String got = Peers.canon(generic ? PojoUtils.generalize(m.get("value")) : m.get("value"));
        Map<String, Object> reply = new HashMap<>();
        reply.put("provider", m.get("provider"));
        reply.put("version", m.get("version"));
        reply.put("method", "Mirror");
        reply.put("arg", want.equals(got) ? seed : "MISMATCH sent " + want + " got " + got);
        reply.put("attachments", m.get("attachments"));
        return GSON.toJson(reply);
    }

    private static Object invokeGeneric(GenericService g, Call c) {
        switch (c.method) {
            case "Whoami":
                return g.$invoke("Whoami", new String[0], new Object[0]);
            case "Slow":
                return g.$invoke("Slow", new String[] {"int"}, new Object[] {Integer.parseInt(c.arg)});
            default:
                return g.$invoke(c.method, new String[] {"java.lang.String"}, new Object[] {c.arg});
        }
    }

    private static Object invokeTyped(Greeter g, Call c) {
        switch (c.method) {
            case "Greet":
                return g.Greet(c.arg);
            case "Slow":
                return g.Slow(Integer.parseInt(c.arg));
            case "Whoami":
                return g.Whoami();
            default:
                throw new IllegalArgumentException("typed calls know Greet, Slow and Whoami, not " + c.method);
        }
    }

    private static void fail(Result r, Throwable e) {
        r.error = String.valueOf(e.getMessage());
        r.error_class = e.getClass().getName();
        if (e instanceof RpcException) {
            r.code = ((RpcException) e).getCode();
        }
        r.causes = new ArrayList<>();
        for (Throwable t = e.getCause(); t != null && r.causes.size() < 8; t = t.getCause()) {
            r.causes.add(t.getClass().getName() + ": " + t.getMessage());
        }
    }

    private static Object reference(String addr, boolean generic, int timeout, String version) {
        String key = addr + "|" + generic + "|" + timeout + "|" + version;
        return REFS.computeIfAbsent(key, k -> {
            Map<String, String> params = new HashMap<>();
            params.put("serialization", "hessian2");
            params.put("prefer.serialization", "hessian2");
            if (heartbeat != null) {
                params.put("heartbeat", heartbeat);
            }
            StringBuilder url = new StringBuilder("dubbo://").append(addr).append("/org.breeze.Greeter");
            char sep = '?';
            for (Map.Entry<String, String> e : params.entrySet()) {
                url.append(sep).append(e.getKey()).append('=').append(e.getValue());
                sep = '&';
            }
            if (generic) {
                ReferenceConfig<GenericService> rc = new ReferenceConfig<>();
                rc.setInterface("org.breeze.Greeter");
                rc.setGeneric("true");
                configure(rc, url.toString(), timeout, version);
                return rc.get();
            }
            ReferenceConfig<Greeter> rc = new ReferenceConfig<>();
            rc.setInterface(Greeter.class);
            configure(rc, url.toString(), timeout, version);
            return rc.get();
        });
    }

    private static void configure(ReferenceConfig<?> rc, String url, int timeout, String version) {
        rc.setUrl(url);
        rc.setTimeout(timeout);
        rc.setRetries(0);
        rc.setCluster("failfast");
        rc.setCheck(false);
        if (!version.isEmpty()) {
            rc.setVersion(version);
        }
    }
}

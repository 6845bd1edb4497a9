package org.breeze.e2e;

import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.lang.reflect.Array;
import java.math.BigDecimal;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Date;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;

import org.breeze.Person;

/** What the provider and the consumer share: flags, logging, stdout. */
final class Peers {
    private Peers() {}

    /** stdout, line by line, safe for many threads. */
    static final PrintStream OUT = new PrintStream(System.out, true, StandardCharsets.UTF_8);

    static synchronized void println(String line) {
        OUT.println(line);
    }

    /** Parses "--key value" pairs; "--flag" alone is "true". */
    static Map<String, String> flags(String[] args) {
        Map<String, String> m = new HashMap<>();
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (!a.startsWith("--")) {
                throw new IllegalArgumentException("unexpected argument " + a);
            }
            String k = a.substring(2);
            if (i + 1 < args.length && !args[i + 1].startsWith("--")) {
                m.put(k, args[++i]);
            } else {
                m.put(k, "true");
            }
        }
        return m;
    }

    /**
     * Pins Apache Dubbo's idea of "this host" to 127.0.0.1. Dubbo replaces any
     * 127.x host it is asked to connect to by the first non-loopback address of
     * the machine (NetUtils.filterLocalHost, in AbstractClient.getConnectAddress),
     * found by probing the network interfaces (InetAddress.isReachable). A client
     * told dubbo://127.0.0.1:PORT would dial eth0's address instead, where the
     * proxy under test does not listen and where tests must not send traffic.
     * Call it first thing in main, before Dubbo computes and caches the address.
     */
    static void pinLoopback() {
        try {
            Class<?> net = Class.forName("org.apache.dubbo.common.utils.NetUtils");
            java.lang.reflect.Field addr = net.getDeclaredField("LOCAL_ADDRESS");
            addr.setAccessible(true);
            addr.set(null, java.net.InetAddress.getByName("127.0.0.1"));
            java.lang.reflect.Field host = net.getDeclaredField("HOST_ADDRESS");
            host.setAccessible(true);
            host.set(null, "127.0.0.1");
        } catch (ReflectiveOperationException | java.io.IOException e) {
            throw new IllegalStateException("cannot pin Dubbo's local address to 127.0.0.1", e);
        }
        String got = org.apache.dubbo.common.utils.NetUtils.getLocalHost();
        if (!"127.0.0.1".equals(got)) {
            throw new IllegalStateException("Dubbo's local host is " + got + ", want 127.0.0.1");
        }
    }

    /**
     * Dubbo logs through java.util.logging (no other logging library on the class
     * path); its JDK adapter loads logging.properties (warnings and errors only).
     */
    static void quietLogging() {
        System.setProperty("dubbo.application.logger", "jdk");
    }

    /**
     * A value with the hessian2 shapes Java writes beyond strings and ints: typed
     * and untyped maps, lists, arrays, a set, class definitions and instances, an
     * object referenced twice, an enum, a date, a big decimal, binary, a long
     * (chunked) string, non-ASCII text and a null.
     */
    static Object richValue(String seed) {
        Person a = new Person(seed, 30, Person.Kind.ADMIN, new ArrayList<>(List.of("x", seed)), null);
        Person b = new Person("friend-of-" + seed, 31, Person.Kind.USER, null, a);
        byte[] bytes = new byte[300];
        for (int i = 0; i < bytes.length; i++) {
            bytes[i] = (byte) i;
        }
        Map<String, Object> nested = new HashMap<>();
        nested.put("k", new HashMap<>(Map.of("k2", new ArrayList<>(List.of(1, 2, 3)))));
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("seed", seed);
        m.put("int", 42);
        m.put("negative", -7);
        m.put("long", 1L << 40);
        m.put("double", 3.25);
        m.put("bool", true);
        m.put("null", null);
        m.put("bytes", bytes);
        m.put("date", new Date(1700000000123L));
        m.put("decimal", new BigDecimal("12345.678901234567890"));
        m.put("unicode", "h\u00e9llo w\u00f6rld \u2603 \ud834\udd1e " + seed);
        m.put("long-string", "ab".repeat(40_000) + seed);
        m.put("ints", new int[] {1, 2, 3, 1 << 20});
        m.put("strings", new String[] {"a", seed});
        m.put("list", new ArrayList<>(List.of(1, "two", 3.5)));
        m.put("set", new TreeSet<>(List.of("b", "a")));
        m.put("person", a);
        m.put("friend", b);
        m.put("people", new ArrayList<>(List.of(a, b)));
        m.put("nested", nested);
        return m;
    }

    /** A canonical text of a value, to compare what was sent with what came back. */
    static String canon(Object o) {
        if (o == null) {
            return "null";
        }
        if (o instanceof Map) {
            TreeMap<String, String> sorted = new TreeMap<>();
            for (Map.Entry<?, ?> e : ((Map<?, ?>) o).entrySet()) {
                sorted.put(String.valueOf(e.getKey()), canon(e.getValue()));
            }
            return "{" + String.join(",", sorted.entrySet().stream().map(e -> e.getKey() + "=" + e.getValue()).toList()) + "}";
        }
        if (o instanceof Set) {
            TreeSet<String> sorted = new TreeSet<>();
            for (Object e : (Set<?>) o) {
                sorted.add(canon(e));
            }
            return "set" + sorted;
        }
        if (o instanceof Collection) {
            List<String> l = new ArrayList<>();
            for (Object e : (Collection<?>) o) {
                l.add(canon(e));
            }
            return l.toString();
        }
        if (o instanceof byte[]) {
            byte[] b = (byte[]) o;
            return "bin(" + b.length + "," + java.util.Arrays.hashCode(b) + ")";
        }
        if (o.getClass().isArray()) {
            List<String> l = new ArrayList<>();
            for (int i = 0; i < Array.getLength(o); i++) {
                l.add(canon(Array.get(o, i)));
            }
            return l.toString();
        }
        if (o instanceof Person) {
            Person p = (Person) o;
            return "Person(" + p.getName() + "," + p.getAge() + "," + p.getKind() + "," + canon(p.getTags()) + ","
                    + canon(p.getFriend()) + ")";
        }
        if (o instanceof Enum) {
            return ((Enum<?>) o).name();
        }
        if (o instanceof Date) {
            return "date(" + ((Date) o).getTime() + ")";
        }
        if (o instanceof BigDecimal) {
            return "dec(" + ((BigDecimal) o).toPlainString() + ")";
        }
        if (o instanceof String) {
            String s = (String) o;
            return s.length() > 64 ? "str(" + s.length() + "," + s.hashCode() + ")" : "'" + s + "'";
        }
        return o.toString();
    }
}

package org.breeze;

/**
 * The test service of the end-to-end suite (see e2e/internal/greeter): the same
 * Dubbo interface the dubbo-go peers serve. Method names are capitalized as
 * dubbo-go exposes them.
 *
 * <p>Every method returns a JSON reply naming the provider that served the call,
 * the Dubbo service version, the method, its argument and the attachments the
 * provider received.
 */
public interface Greeter {
    String Greet(String name);

    /** Answers after {@code ms} milliseconds. */
    String Slow(int ms);

    String Whoami();

    /**
     * Returns {@code value} unchanged inside a map that also names the provider:
     * {"provider", "version", "method", "value", "attachments"}. Java peers only
     * (the dubbo-go peers do not serve it): it carries Java's richer hessian2
     * shapes (class definitions, object references, typed lists and maps, dates,
     * big decimals, binary, chunked strings) in both directions.
     */
    java.util.Map<String, Object> Mirror(Object value);
}

package org.breeze;

import java.io.Serializable;
import java.util.List;

/**
 * A plain Java object for {@link Greeter#Mirror}: Java's hessian2 writes it as a
 * class definition followed by object instances, with back references for an
 * object met twice.
 */
public class Person implements Serializable {
    private static final long serialVersionUID = 1L;

    /** An enum: hessian2 writes it as an object with a "name" field. */
    public enum Kind {
        ADMIN,
        USER
    }

    private String name;
    private int age;
    private Kind kind;
    private List<String> tags;
    private Person friend;

    public Person() {}

    public Person(String name, int age, Kind kind, List<String> tags, Person friend) {
        this.name = name;
        this.age = age;
        this.kind = kind;
        this.tags = tags;
        this.friend = friend;
    }

    public String getName() {
        return name;
    }

    public void setName(String name) {
        this.name = name;
    }

    public int getAge() {
        return age;
    }

    public void setAge(int age) {
        this.age = age;
    }

    public Kind getKind() {
        return kind;
    }

    public void setKind(Kind kind) {
        this.kind = kind;
    }

    public List<String> getTags() {
        return tags;
    }

    public void setTags(List<String> tags) {
        this.tags = tags;
    }

    public Person getFriend() {
        return friend;
    }

    public void setFriend(Person friend) {
        this.friend = friend;
    }
}

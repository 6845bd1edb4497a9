// The service the Thrift test frames, the interop tests and the end-to-end
// peers use. Generated code: gen-go/ (Apache Thrift 0.17 compiler) and
// kitex_gen/ (Kitex v0.13.1 tool); see ../README.md.
namespace go echo

struct User {
  1: string id
  2: string name
  3: i32 age
  4: list<string> tags
  5: map<string, string> attrs
  6: optional User friend
  7: double score
  8: bool active
  9: binary avatar
}

exception NotFound {
  1: string message
}

service Greeter {
  // Greet answers "hello <name> from <server>".
  string Greet(1: string name, 2: User user)
  // Whoami answers the server's name.
  string Whoami()
  // Slow answers the server's name after ms milliseconds.
  string Slow(1: i32 ms)
  // GetUser throws NotFound for id "missing".
  User GetUser(1: string id) throws (1: NotFound nf)
  // Fire is a oneway call; the server counts it.
  oneway void Fire(1: string event)
  // Fired answers how many oneway calls the server received.
  i64 Fired()
}

package host

// GoroutineID is goroutineID for the external tests (which goroutine made
// a callback).
var GoroutineID = goroutineID

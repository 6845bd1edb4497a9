//go:build race

package pluginpath

// raceEnabled: the race detector's runtime allocates on its own (about
// one allocation per ten requests here), so the allocation bar is looser.
const raceEnabled = true

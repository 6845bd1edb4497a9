//go:build !race

package pluginpath

const raceEnabled = false

//go:build !race

package testutil

// RaceEnabled reports whether the race detector is built in. It changes
// escape analysis, so allocation counts are only asserted without it.
const RaceEnabled = false

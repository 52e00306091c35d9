package config

// positions maps a key path ("pools[0].backends[1].url") to its place in the
// file.
type positions map[string]pos

type pos struct{ line, col int }

//go:build !race

package proxy_test

// raceDetector is true in a -race build, where sync.Pool drops buffers at
// random, so total allocation says nothing about buffering.
const raceDetector = false

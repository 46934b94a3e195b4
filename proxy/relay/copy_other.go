//go:build !linux

package relay

// platformParks is false off Linux: a direction never waits for its
// socket without a buffer, never parks, and never splices.
const platformParks = false

// fastCopy never applies off Linux: every direction copies through a
// pooled buffer (bufferLoop), as io.Copy does.
func (d *direction) fastCopy() (handled bool, err error) { return false, nil }

// waitReadable is never reached off Linux, where srcRaw stays nil.
func (d *direction) waitReadable() error { return nil }

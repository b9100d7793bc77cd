package router

import "time"

// mono is a point in time as nanoseconds on the monotonic clock since the
// process started, 0 meaning none: 8 bytes and no pointer where a
// time.Time takes 24 bytes and one the garbage collector scans, for the
// timestamps every session keeps.
type mono int64

// epoch is mono's origin.
var epoch = time.Now()

// monoNow is the current time as a mono (never 0). It reads only the
// monotonic clock (time.Since does), half the cost of time.Now, which
// reads the wall clock too.
func monoNow() mono { return mono(time.Since(epoch)) | 1 }

// toMono converts t, which should carry a monotonic reading (time.Now's
// do); the zero Time is none.
func toMono(t time.Time) mono {
	if t.IsZero() {
		return 0
	}
	return mono(t.Sub(epoch)) | 1
}

// IsZero reports whether m is none.
func (m mono) IsZero() bool { return m == 0 }

// Time is m as a time.Time (the zero Time for none).
func (m mono) Time() time.Time {
	if m == 0 {
		return time.Time{}
	}
	return epoch.Add(time.Duration(m))
}

// Sub is m - o.
func (m mono) Sub(o mono) time.Duration { return time.Duration(m - o) }

// since is how long ago m was.
func since(m mono) time.Duration { return monoNow().Sub(m) }

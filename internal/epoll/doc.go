// Package epoll is how pgferry's event loop (the parker and relay loop in
// router) waits for its epoll set: in Go's netpoller while it is idle,
// with a raw system call while the relay loop is busy; and the 64 bits of
// data an event carries. It is Linux only, and one of the low-level
// tricks: building with pgferry_nopark leaves out the loop, its only user.
package epoll

// Package notify serves LISTEN/NOTIFY for the clients of one pool over a
// single dedicated server connection (Listener): it issues LISTEN and
// UNLISTEN on that connection, acknowledges a client's LISTEN only once the
// server has confirmed it, fans each NotificationResponse out to the
// subscribers of its channel, re-establishes the connection and its
// subscriptions when it breaks, and ends its subscribers' LISTENs when it
// closes.
//
// It knows client sessions only through the Subscriber interface it
// declares; what a notification does to a session (its mailbox, when it
// reaches the client) is the router's. notify imports pool and protocol,
// never router.
package notify

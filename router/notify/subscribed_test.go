package notify_test

import "testing"

func TestSubscribedReportsASubscriberFromSubscribeToUnsubscribeOrClose(t *testing.T) {
	l, _, _ := setup(t)
	a, b := newSubscriber(), newSubscriber()
	if l.Subscribed(a, "ch") {
		t.Fatal("subscribed before Subscribe")
	}
	if err := l.Subscribe(a, "ch"); err != nil {
		t.Fatal(err)
	}
	if !l.Subscribed(a, "ch") || l.Subscribed(a, "other") || l.Subscribed(b, "ch") {
		t.Fatal("after a's Subscribe to ch: want a on ch alone")
	}
	if err := l.Subscribe(b, "ch"); err != nil {
		t.Fatal(err)
	}
	l.Unsubscribe(a, "ch")
	if l.Subscribed(a, "ch") || !l.Subscribed(b, "ch") {
		t.Fatal("after a's Unsubscribe: want b on ch alone")
	}
	l.Close()
	if l.Subscribed(b, "ch") {
		t.Fatal("subscribed after Close")
	}
}

package daemon

import (
	"sync"
	"time"
)

// Event is one thing that happened, for the dashboard's recent-events list.
type Event struct {
	Time time.Time `json:"time"`
	What string    `json:"what"`
}

// Events keeps the last events in memory (not in etcd: they are a view, and
// every replica shows what it saw).
type Events struct {
	mu   sync.Mutex
	max  int
	list []Event
	subs map[chan Event]bool
}

// NewEvents keeps at most max events.
func NewEvents(max int) *Events { return &Events{max: max, subs: map[chan Event]bool{}} }

// Add records an event and notifies subscribers (dropping for slow ones).
func (e *Events) Add(what string) {
	ev := Event{Time: time.Now().UTC(), What: what}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.list = append(e.list, ev)
	if len(e.list) > e.max {
		e.list = e.list[len(e.list)-e.max:]
	}
	for ch := range e.subs {
		select {
		case ch <- ev:
		default:
		}
	}
}

// Recent returns the events, oldest first.
func (e *Events) Recent() []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Event(nil), e.list...)
}

// Subscribe returns a channel of new events and a cancel function.
func (e *Events) Subscribe() (<-chan Event, func()) {
	ch := make(chan Event, 64)
	e.mu.Lock()
	e.subs[ch] = true
	e.mu.Unlock()
	return ch, func() {
		e.mu.Lock()
		delete(e.subs, ch)
		e.mu.Unlock()
	}
}

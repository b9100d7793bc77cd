package router

import (
	"sync"

	"github.com/pgferry/pgferry/pool"
)

// pumpWorkers keeps the goroutines that relay server responses alive
// between transactions. Starting a goroutine per transaction cost a spawn
// and, worse, growing its stack again on every transaction (runtime
// copystack showed as 6% of CPU under pgbench); a parked worker keeps its
// grown stack. At most as many workers stay parked as were needed at once,
// capped at maxIdle; the rest exit.
type pumpWorkers struct {
	// mu guards idle and closed.
	mu      sync.Mutex
	idle    []chan pumpJob
	closed  bool
	maxIdle int
	wg      sync.WaitGroup // every worker goroutine
}

// pumpJob is one transaction's relay: session ss reads sc until done.
type pumpJob struct {
	ss   *session
	sc   *pool.ServerConn
	done chan struct{}
}

// run hands the job to a parked worker or starts a new one.
func (w *pumpWorkers) run(j pumpJob) {
	w.mu.Lock()
	if n := len(w.idle); n > 0 && !w.closed {
		ch := w.idle[n-1]
		w.idle[n-1] = nil
		w.idle = w.idle[:n-1]
		w.mu.Unlock()
		ch <- j
		return
	}
	w.wg.Add(1)
	w.mu.Unlock()
	go w.loop(j)
}

func (w *pumpWorkers) loop(j pumpJob) {
	defer w.wg.Done()
	ch := make(chan pumpJob, 1)
	for {
		j.ss.pump(j.sc, j.done)
		w.mu.Lock()
		if w.closed || len(w.idle) >= w.maxIdle {
			w.mu.Unlock()
			return
		}
		w.idle = append(w.idle, ch)
		w.mu.Unlock()
		var ok bool
		if j, ok = <-ch; !ok {
			return
		}
	}
}

// close ends parked workers and waits for every worker to finish its job.
func (w *pumpWorkers) close() {
	w.mu.Lock()
	w.closed = true
	idle := w.idle
	w.idle = nil
	w.mu.Unlock()
	for _, ch := range idle {
		close(ch)
	}
	w.wg.Wait()
}

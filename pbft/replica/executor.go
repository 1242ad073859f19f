package replica

import (
	"sync"

	"github.com/pbftkit/pbft/app"
	"github.com/pbftkit/pbft/pbft"
	"github.com/pbftkit/pbft/pbft/driver"
)

// executor runs the driver's Apply stage on its own goroutine, strictly in the order the
// core emitted: the loop keeps ordering and voting while the application works. Its
// queue is unbounded in type but not in fact: the core emits at most a log window of
// batches before their results come back.
type executor struct {
	app     app.Application
	drv     *driver.Driver
	results chan<- pbft.Executed

	mu    sync.Mutex
	queue []driver.Work
	kick  chan struct{}
	// durable is kicked by the persister after each durable write: an item waits for
	// the records emitted before it (driver.Work.After).
	durable chan struct{}
	// err is the first application failure (a snapshot that cannot be taken, a state
	// that does not restore, a panic); the executor stops at it.
	err error
}

func newExecutor(a app.Application, d *driver.Driver, results chan<- pbft.Executed) *executor {
	return &executor{app: a, drv: d, results: results, kick: make(chan struct{}, 1), durable: make(chan struct{}, 1)}
}

func (e *executor) push(work []driver.Work) {
	e.mu.Lock()
	e.queue = append(e.queue, work...)
	e.mu.Unlock()
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

func (e *executor) run(quit <-chan struct{}) {
	for {
		e.mu.Lock()
		items := e.queue
		e.queue = nil
		e.mu.Unlock()
		for _, it := range items {
			for e.drv.Persisted() < it.After {
				select {
				case <-e.durable:
				case <-quit:
					return
				}
			}
			ex, err := e.drv.Apply(e.app, it)
			if err != nil {
				e.mu.Lock()
				e.err = err
				e.mu.Unlock()
				<-quit
				return
			}
			if ex == nil {
				continue
			}
			select {
			case e.results <- *ex:
			case <-quit:
				return
			}
		}
		select {
		case <-e.kick:
		case <-quit:
			return
		}
	}
}

// persisted tells the executor that more records are durable.
func (e *executor) persisted() {
	select {
	case e.durable <- struct{}{}:
	default:
	}
}

func (e *executor) failure() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

package replica

import (
	"fmt"
	"sync"

	"github.com/pbftkit/pbft/app"
	"github.com/pbftkit/pbft/pbft"
)

// execItem is a committed batch to run, or a checkpoint state to load first.
type execItem struct {
	batch   *pbft.Batch
	install *pbft.Install
}

// executor runs the application on its own goroutine, strictly in the order the core
// emitted: the loop keeps ordering and voting while the application works. Its queue is
// unbounded in type but not in fact: the core emits at most a log window of batches
// before their results come back.
type executor struct {
	app     app.Application
	results chan<- pbft.Executed
	metrics *Metrics

	mu    sync.Mutex
	queue []execItem
	kick  chan struct{}
	// Err is the first application failure (a snapshot that cannot be taken, a state
	// that does not restore); the executor stops at it.
	err error
}

func newExecutor(a app.Application, results chan<- pbft.Executed, m *Metrics) *executor {
	return &executor{app: a, results: results, metrics: m, kick: make(chan struct{}, 1)}
}

func (e *executor) push(it execItem) {
	e.mu.Lock()
	e.queue = append(e.queue, it)
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
			ex, err := e.apply(it)
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

func (e *executor) apply(it execItem) (ex *pbft.Executed, err error) {
	defer func() {
		// An application must not panic (app.Application); if it does, the replica
		// stops with the reason instead of taking the process down.
		if p := recover(); p != nil {
			ex, err = nil, fmt.Errorf("application panicked: %v", p)
		}
	}()
	if it.install != nil {
		if err := e.app.Restore(it.install.App); err != nil {
			return nil, fmt.Errorf("restore checkpoint n=%d: %w", it.install.Seq, err)
		}
		return nil, nil
	}
	b := it.batch
	ex = &pbft.Executed{Seq: b.Seq, Results: make([][]byte, len(b.Requests))}
	for i, m := range b.Requests {
		ex.Results[i] = e.app.Execute(m.Request.Op)
	}
	e.metrics.Batches.Add(1)
	e.metrics.Requests.Add(uint64(len(b.Requests)))
	if b.Checkpoint {
		snap, err := e.app.Snapshot()
		if err != nil {
			return nil, fmt.Errorf("snapshot n=%d: %w", b.Seq, err)
		}
		ex.Snapshot = snap
	}
	return ex, nil
}

func (e *executor) failure() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

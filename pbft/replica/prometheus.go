package replica

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector exposes the replica's position and counters to Prometheus, labelled with
// its id: register it with a prometheus.Registry (pbft replica --metrics serves one).
func (r *Replica) Collector() prometheus.Collector { return &collector{r: r} }

type collector struct{ r *Replica }

var (
	labels   = []string{"replica"}
	descView = prometheus.NewDesc("pbft_view", "The view the replica is in or changing to.", labels, nil)
	descAct  = prometheus.NewDesc("pbft_view_active", "1 while the replica runs normally in its view, 0 while it changes view.", labels, nil)
	descExec = prometheus.NewDesc("pbft_executed_seq", "The last sequence number executed.", labels, nil)
	descLow  = prometheus.NewDesc("pbft_stable_checkpoint_seq", "The last stable checkpoint (the low watermark).", labels, nil)
	descLog  = prometheus.NewDesc("pbft_log_entries", "Entries in the replica's message log.", labels, nil)
	descBat  = prometheus.NewDesc("pbft_batches_executed_total", "Batches executed.", labels, nil)
	descReq  = prometheus.NewDesc("pbft_requests_executed_total", "Client requests executed.", labels, nil)
	descPer  = prometheus.NewDesc("pbft_persist_total", "Durable writes of records (group commits).", labels, nil)
	descPerS = prometheus.NewDesc("pbft_persist_seconds_total", "Time spent in durable writes of records.", labels, nil)
	descIn   = prometheus.NewDesc("pbft_frames_accepted_total", "Frames accepted for verification.", labels, nil)
	descDrop = prometheus.NewDesc("pbft_dropped_total", "Input dropped, by reason (Byzantine or malformed input, overload).", append(labels, "reason"), nil)
	descNet  = prometheus.NewDesc("pbft_network_total", "Transport counters: frames and bytes in and out, queue drops, oversized frames, refused peers, reconnections.", append(labels, "counter"), nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descView, descAct, descExec, descLow, descLog, descBat, descReq, descPer, descPerS, descIn, descDrop, descNet} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	r := c.r
	id := strconv.Itoa(int(r.opts.ID))
	st := r.Status()
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{id}, l...)...)
	}
	counter := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append([]string{id}, l...)...)
	}
	active := 0.0
	if st.Active {
		active = 1
	}
	gauge(descView, float64(st.View))
	gauge(descAct, active)
	gauge(descExec, float64(st.Executed))
	gauge(descLow, float64(st.LowMark))
	gauge(descLog, float64(st.LogSize))
	counter(descBat, r.metrics.Batches.Load())
	counter(descReq, r.metrics.Requests.Load())
	counter(descIn, r.metrics.FramesIn.Load())
	counter(descPer, r.metrics.Persists.Load())
	ch <- prometheus.MustNewConstMetric(descPerS, prometheus.CounterValue, float64(r.metrics.PersistNanos.Load())/1e9, id)
	for reason, n := range r.metrics.Drops() {
		counter(descDrop, n, reason)
	}
	ns := r.host.Stats()
	for name, v := range map[string]uint64{
		"frames_in": ns.FramesIn, "frames_out": ns.FramesOut, "bytes_in": ns.BytesIn, "bytes_out": ns.BytesOut,
		"queue_drops": ns.QueueDrops, "oversized": ns.Oversized, "refused": ns.Refused, "reconnects": ns.Reconnects,
		"no_route": ns.NoRoute, "lost": ns.Lost,
	} {
		counter(descNet, v, name)
	}
}

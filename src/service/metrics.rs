//! Prometheus metrics: one process-wide registry of what the server counts as it works
//! (requests, events persisted, syncs) and of what is read when scraped (queue sizes, the
//! store's size and keys, process memory and CPU). Served only on the metrics listener.
//!
//! `prometheus-client` rather than `metrics` + `metrics-exporter-prometheus`: it is the
//! official Prometheus crate and brings three small crates (`dtoa`, `itoa` and a derive) on top
//! of ones the server already builds, where the exporter brings its own HTTP stack, `quanta`,
//! `metrics-util` and a sketch library.

use std::{
    sync::{LazyLock, atomic::AtomicU64},
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};

use super::Services;
use crate::{
    Result,
    storage::{appservice_tables::APPSERVICE_SENDERS, federation_send_tables::OUTBOUND_QUEUE, push_tables::PUSH_QUEUE},
};

/// Queue entries counted at most per scrape (a queue longer than this reads as this long).
const QUEUE_COUNT_CAP: usize = 1_000_000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    /// The route's path template (`/_matrix/client/v3/rooms/{room_id}/send/...`), never the
    /// path itself, so the number of series stays bounded.
    pub endpoint: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub method: String,
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OriginLabels {
    /// `local`, `remote` or `backfill`.
    pub origin: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    pub table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms to about 65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: HistogramFamily<EndpointLabels>,
    events_persisted: Family<OriginLabels, Counter>,
    sync_duration: Histogram,
    syncs_open: Gauge,
    syncs_waiting: Gauge,
    syncs_woken: Counter,
    federation_queue: Gauge,
    push_queue: Gauge,
    appservice_pending: Family<ServiceLabels, Gauge>,
    appservice_lag: Family<ServiceLabels, Gauge>,
    table_keys: Family<TableLabels, Gauge>,
    table_disk_bytes: Family<TableLabels, Gauge>,
    table_memory_bytes: Family<TableLabels, Gauge>,
    cache_bytes: Gauge,
    resident_memory: Gauge,
    virtual_memory: Gauge,
    cpu_seconds: Counter<f64, AtomicU64>,
    open_fds: Gauge,
    start_time: Gauge,
    threads: Gauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn global() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("trellis_http_requests", "HTTP requests answered, by endpoint and status", requests.clone());
        let request_duration: HistogramFamily<EndpointLabels> = Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "trellis_http_request_duration",
            "Time to answer an HTTP request, by endpoint",
            Unit::Seconds,
            request_duration.clone(),
        );
        let events_persisted = Family::<OriginLabels, Counter>::default();
        registry.register(
            "trellis_events_persisted",
            "Room events stored, by where they came from (local, remote, backfill)",
            events_persisted.clone(),
        );
        let sync_duration = latency_histogram();
        registry.register_with_unit(
            "trellis_sync_duration",
            "Time a /sync took, long-poll wait included",
            Unit::Seconds,
            sync_duration.clone(),
        );
        let syncs_open = Gauge::default();
        registry.register("trellis_syncs_open", "/sync requests in progress (open long-polls)", syncs_open.clone());
        let syncs_waiting = Gauge::default();
        registry.register(
            "trellis_syncs_waiting",
            "Syncs (and sliding syncs) registered with the notifier, waiting for a change",
            syncs_waiting.clone(),
        );
        let syncs_woken = Counter::default();
        registry.register(
            "trellis_syncs_woken",
            "Waiting syncs woken by a change that concerns them (by room, user or device)",
            syncs_woken.clone(),
        );
        let federation_queue = Gauge::default();
        registry.register(
            "trellis_federation_send_queue",
            "PDUs and EDUs queued for other servers",
            federation_queue.clone(),
        );
        let push_queue = Gauge::default();
        registry.register("trellis_push_queue", "Notifications queued for push gateways", push_queue.clone());
        let appservice_pending = Family::<ServiceLabels, Gauge>::default();
        registry.register(
            "trellis_appservice_pending_events",
            "Events in the transaction being delivered to an application service",
            appservice_pending.clone(),
        );
        let appservice_lag = Family::<ServiceLabels, Gauge>::default();
        registry.register(
            "trellis_appservice_stream_lag",
            "Stream positions an application service's sender has yet to look at",
            appservice_lag.clone(),
        );
        let table_keys = Family::<TableLabels, Gauge>::default();
        registry.register("trellis_db_estimated_keys", "Estimated keys in each table", table_keys.clone());
        let table_disk_bytes = Family::<TableLabels, Gauge>::default();
        registry.register_with_unit(
            "trellis_db_disk",
            "Size of each table's files on disk",
            Unit::Bytes,
            table_disk_bytes.clone(),
        );
        let table_memory_bytes = Family::<TableLabels, Gauge>::default();
        registry.register_with_unit(
            "trellis_db_memtable",
            "Recent writes of each table held in memory",
            Unit::Bytes,
            table_memory_bytes.clone(),
        );
        let cache_bytes = Gauge::default();
        registry.register_with_unit("trellis_db_block_cache", "Block cache in use", Unit::Bytes, cache_bytes.clone());
        let resident_memory = Gauge::default();
        registry.register_with_unit(
            "process_resident_memory",
            "Resident memory size",
            Unit::Bytes,
            resident_memory.clone(),
        );
        let virtual_memory = Gauge::default();
        registry.register_with_unit(
            "process_virtual_memory",
            "Virtual memory size",
            Unit::Bytes,
            virtual_memory.clone(),
        );
        let cpu_seconds = Counter::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "process_cpu",
            "User and system CPU time spent",
            Unit::Seconds,
            cpu_seconds.clone(),
        );
        let open_fds = Gauge::default();
        registry.register("process_open_fds", "Open file descriptors", open_fds.clone());
        let start_time = Gauge::default();
        registry.register_with_unit(
            "process_start_time",
            "Start time of the process since the Unix epoch",
            Unit::Seconds,
            start_time.clone(),
        );
        let threads = Gauge::default();
        registry.register("process_threads", "Threads of the process", threads.clone());
        Self {
            registry,
            requests,
            request_duration,
            events_persisted,
            sync_duration,
            syncs_open,
            syncs_waiting,
            syncs_woken,
            federation_queue,
            push_queue,
            appservice_pending,
            appservice_lag,
            table_keys,
            table_disk_bytes,
            table_memory_bytes,
            cache_bytes,
            resident_memory,
            virtual_memory,
            cpu_seconds,
            open_fds,
            start_time,
            threads,
        }
    }

    /// Counts an answered request; `endpoint` is the route's path template.
    pub fn request(&self, method: &str, endpoint: &str, status: u16, took: Duration) {
        let (method, endpoint) = (method.to_owned(), endpoint.to_owned());
        self.request_duration
            .get_or_create(&EndpointLabels { method: method.clone(), endpoint: endpoint.clone() })
            .observe(took.as_secs_f64());
        self.requests.get_or_create(&RequestLabels { method, endpoint, status }).inc();
    }

    /// Counts an event stored in a room (`origin`: `local`, `remote` or `backfill`).
    pub fn event_persisted(&self, origin: &'static str) {
        self.events_persisted.get_or_create(&OriginLabels { origin }).inc();
    }

    /// Marks a /sync as open until the returned guard is dropped (when it answers, or when
    /// the client goes away), then records how long it took.
    pub fn sync_started(&'static self) -> SyncGuard {
        self.syncs_open.inc();
        SyncGuard { metrics: self, started: Instant::now() }
    }

    /// A sync registered with the notifier (until [`sync_wait_ended`](Self::sync_wait_ended)).
    pub fn sync_wait_started(&self) {
        self.syncs_waiting.inc();
    }

    pub fn sync_wait_ended(&self) {
        self.syncs_waiting.dec();
    }

    /// Counts waiting syncs woken by a change.
    pub fn syncs_woken(&self, count: u64) {
        self.syncs_woken.inc_by(count);
    }

    /// Reads what is measured at scrape time and writes every metric in Prometheus's text
    /// format.
    pub async fn scrape(&self, services: &Services) -> Result<String> {
        let head = services.rooms.current_position();
        let (stats, federation_queue, push_queue, senders) = services
            .db
            .run(|db| {
                Ok((
                    db.store_stats(),
                    OUTBOUND_QUEUE.count_up_to(db, QUEUE_COUNT_CAP)?,
                    PUSH_QUEUE.count_up_to(db, QUEUE_COUNT_CAP)?,
                    APPSERVICE_SENDERS.all(db)?,
                ))
            })
            .await?;
        self.federation_queue.set(federation_queue as i64);
        self.push_queue.set(push_queue as i64);
        for (service, record) in senders {
            let labels = ServiceLabels { service };
            let pending = record.pending.as_ref().map_or(0, |txn| txn.events.len());
            self.appservice_pending.get_or_create(&labels).set(pending as i64);
            self.appservice_lag.get_or_create(&labels).set(head.saturating_sub(record.cursor) as i64);
        }
        if let Some(stats) = stats {
            for table in stats.tables {
                let labels = TableLabels { table: table.table };
                self.table_keys.get_or_create(&labels).set(table.estimated_keys as i64);
                self.table_disk_bytes.get_or_create(&labels).set(table.disk_bytes as i64);
                self.table_memory_bytes.get_or_create(&labels).set(table.memory_bytes as i64);
            }
            self.cache_bytes.set(stats.cache_bytes as i64);
        }
        self.read_process();
        let mut out = String::new();
        encode(&mut out, &self.registry).map_err(|e| crate::Error::internal(format!("encoding metrics: {e}")))?;
        Ok(out)
    }

    /// Process memory, CPU, descriptors and threads from `/proc/self` (Linux; elsewhere they
    /// stay 0).
    fn read_process(&self) {
        let Some(process) = super::metrics_proc::read() else { return };
        self.resident_memory.set(process.resident_bytes as i64);
        self.virtual_memory.set(process.virtual_bytes as i64);
        self.open_fds.set(process.open_fds as i64);
        self.threads.set(process.threads as i64);
        self.start_time.set(process.start_time_secs as i64);
        let seen = self.cpu_seconds.get();
        if process.cpu_seconds > seen {
            self.cpu_seconds.inc_by(process.cpu_seconds - seen);
        }
    }
}

/// An open /sync (see [`Metrics::sync_started`]).
pub struct SyncGuard {
    metrics: &'static Metrics,
    started: Instant,
}

impl Drop for SyncGuard {
    fn drop(&mut self) {
        self.metrics.syncs_open.dec();
        self.metrics.sync_duration.observe(self.started.elapsed().as_secs_f64());
    }
}
